//! A page opened in headless Chromium: navigate to a file, evaluate JavaScript, screenshot.

use std::path::Path;

use base64::Engine;
use serde_json::{Value, json};

use super::cdp::Browser;

pub struct Page {
    pub browser: Browser,
    session: String,
}

impl Page {
    /// Opens `file` in a fresh 1200x900 tab and waits for its load event.
    pub fn open(mut browser: Browser, file: &Path) -> Page {
        let target = browser.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let attached = browser.call(None, "Target.attachToTarget", json!({ "targetId": target["targetId"], "flatten": true }));
        let session = attached["sessionId"].as_str().expect("session id").to_string();
        let s = Some(session.as_str());
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            browser.call(s, domain, json!({}));
        }
        browser.call(s, "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": false }));
        let url = format!("file://{}", file.display());
        browser.call(s, "Page.navigate", json!({ "url": url }));
        browser.wait_for(|m| m["method"] == "Page.loadEventFired");
        Page { browser, session }
    }

    /// The value of a JavaScript expression (JSON-serializable results only).
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.browser.call(Some(&self.session), "Runtime.evaluate", json!({ "expression": expr, "returnByValue": true }));
        if let Some(e) = r.get("exceptionDetails") {
            panic!("`{expr}` threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// A PNG of the viewport.
    pub fn screenshot(&mut self) -> Vec<u8> {
        let r = self.browser.call(Some(&self.session), "Page.captureScreenshot", json!({ "format": "png" }));
        let b64 = r["data"].as_str().expect("screenshot data");
        base64::engine::general_purpose::STANDARD.decode(b64).expect("base64 png")
    }
}

impl Page {
    /// The page printed to PDF (A4 portrait, backgrounds on), as the print stylesheet lays it out.
    pub fn pdf(&mut self) -> Vec<u8> {
        let r = self.browser.call(Some(&self.session), "Page.printToPDF",
            json!({ "printBackground": true, "paperWidth": 8.27, "paperHeight": 11.69 }));
        let b64 = r["data"].as_str().expect("pdf data");
        base64::engine::general_purpose::STANDARD.decode(b64).expect("base64 pdf")
    }
}

/// (distinct colors, share of non-white pixels) of a PNG.
pub fn pixel_stats(png_bytes: &[u8]) -> (usize, f64) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size().expect("png size")];
    let info = reader.next_frame(&mut buf).expect("png frame");
    let channels = info.color_type.samples();
    let px = &buf[..info.buffer_size()];
    let mut colors = std::collections::HashSet::new();
    let mut inked = 0usize;
    let n = px.len() / channels;
    for p in px.chunks_exact(channels) {
        colors.insert(p[..3.min(channels)].to_vec());
        if p[..3.min(channels)].iter().any(|c| *c < 240) {
            inked += 1;
        }
    }
    (colors.len(), inked as f64 / n.max(1) as f64)
}
