//! `{{ ... }}` in manifest strings, rendered with minijinja. A string that is one whole
//! expression (`"{{ vars.tokens }}"`) keeps the expression's type, so numbers stay numbers.

use minijinja::{Environment, UndefinedBehavior};

use super::diag::Problem;
use super::node::{Node, Value};

pub struct Templater {
    env: Environment<'static>,
}

impl Default for Templater {
    fn default() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        Self { env }
    }
}

impl Templater {
    /// Renders every string in `node` in place; failures become problems at the string.
    pub fn render_tree(&self, node: &mut Node, ctx: &minijinja::Value, problems: &mut Vec<Problem>) {
        match &mut node.value {
            Value::String(s) => {
                if !s.contains("{{") && !s.contains("{%") {
                    return;
                }
                match self.render(s, ctx) {
                    Ok(Rendered::Text(t)) => *s = t,
                    Ok(Rendered::Typed(v)) => *node = Node::from_json(&v, &node.span),
                    Err(e) => problems.push(
                        Problem::new(format!("template error: {}", describe(&e)))
                            .at(&node.span, "in this string"),
                    ),
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|n| self.render_tree(n, ctx, problems)),
            Value::Table(t) => {
                t.entries.iter_mut().for_each(|(_, n)| self.render_tree(n, ctx, problems))
            }
            _ => {}
        }
    }

    fn render(&self, s: &str, ctx: &minijinja::Value) -> Result<Rendered, minijinja::Error> {
        if let Some(expr) = whole_expression(s) {
            let value = self.env.compile_expression(expr)?.eval(ctx)?;
            // Strict mode only trips when printing; a bare expression must be checked here.
            if value.is_undefined() {
                return Err(minijinja::Error::new(
                    minijinja::ErrorKind::UndefinedError,
                    format!("`{expr}` is undefined"),
                ));
            }
            let json = serde_json::to_value(&value).map_err(|e| {
                minijinja::Error::new(minijinja::ErrorKind::BadSerialization, e.to_string())
            })?;
            return Ok(match json {
                serde_json::Value::String(t) => Rendered::Text(t),
                other => Rendered::Typed(other),
            });
        }
        self.env.render_str(s, ctx).map(Rendered::Text)
    }
}

enum Rendered {
    Text(String),
    Typed(serde_json::Value),
}

/// The inside of `{{ expr }}` when the string is exactly one expression.
fn whole_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then_some(inner.trim())
}

fn describe(e: &minijinja::Error) -> String {
    let mut msg = e.to_string();
    // minijinja appends "(in <string>:1)", which names no file a user has.
    if let Some(i) = msg.find(" (in <string>") {
        msg.truncate(i);
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::node::Span;

    fn node(s: &str) -> Node {
        Node { value: Value::String(s.into()), span: Span { file: 0, range: 0..1 } }
    }

    #[test]
    fn whole_expressions_keep_their_type() {
        let t = Templater::default();
        let ctx = minijinja::context! { vars => minijinja::context! { n => 5, name => "x" } };
        let mut p = Vec::new();
        let mut a = node("{{ vars.n }}");
        t.render_tree(&mut a, &ctx, &mut p);
        assert_eq!(a.value, Value::Integer(5));
        let mut b = node("run-{{ vars.name }}-{{ vars.n * 2 }}");
        t.render_tree(&mut b, &ctx, &mut p);
        assert_eq!(b.value, Value::String("run-x-10".into()));
        let mut c = node("{{ vars.missing }}");
        t.render_tree(&mut c, &ctx, &mut p);
        assert_eq!(p.len(), 1);
        assert!(p[0].message.contains("undefined"), "{}", p[0].message);
    }
}
