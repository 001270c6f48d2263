//! The structure of a report page as text: section ids and headings in document order, for
//! the snapshot test. Numbers and styles are left out so the snapshot pins structure only.

/// One line per `<header|section|figure id=..>` and per `<h1>`..`<h4>` (tags stripped).
pub fn outline(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let tag: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        match tag.as_str() {
            "header" | "section" | "figure" => {
                let head = &rest[..rest.find('>').unwrap_or(rest.len())];
                if let Some(id) = attr(head, "id") {
                    out.push_str(&format!("{tag} #{id}\n"));
                }
            }
            "h1" | "h2" | "h3" | "h4" => {
                let close = format!("</{tag}>");
                let inner = &rest[rest.find('>').map_or(0, |g| g + 1)..rest.find(&close).unwrap_or(rest.len())];
                out.push_str(&format!("  {tag} {}\n", strip_tags(inner)));
            }
            _ => {}
        }
    }
    out
}

fn attr<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = head.find(&key)? + key.len();
    Some(&head[start..start + head[start..].find('"')?])
}

fn strip_tags(s: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Compares `actual` with the committed file, or rewrites it when `UPDATE_SNAPSHOTS=1`.
pub fn assert_snapshot(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing: run with UPDATE_SNAPSHOTS=1", path.display()));
    assert!(
        expected == actual,
        "{name} changed; if intended, regenerate with UPDATE_SNAPSHOTS=1 cargo test -p distill-reports\n--- expected\n{expected}\n--- actual\n{actual}"
    );
}
