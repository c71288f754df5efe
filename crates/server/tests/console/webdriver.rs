//! A small W3C WebDriver client (the few commands the console's browser tests use), over the
//! HTTP client the tests already have, and the chromedriver process it talks to.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The W3C name of an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process, killed when dropped.
pub struct Driver {
    child: Child,
    pub url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    for name in names {
        for dir in path.split(':').chain(["/usr/bin", "/usr/lib/chromium"]) {
            let candidate = Path::new(dir).join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

impl Driver {
    /// Starts chromedriver on a free port; `None` (after a loud `SKIPPED:` line) when
    /// chromedriver or chromium is not installed, except under `CI=true`, where that fails.
    pub async fn start() -> Option<(Driver, PathBuf)> {
        let (Some(driver), Some(browser)) = (which(&["chromedriver"]), which(&["chromium", "chromium-browser"])) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "chromedriver and chromium are required under CI=true (apt-get install chromium chromium-driver)"
            );
            eprintln!("SKIPPED: the console's browser test needs chromedriver and chromium (apt-get install chromium chromium-driver)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let driver = Driver { child, url: format!("http://127.0.0.1:{port}") };
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(status) = http.get(format!("{}/status", driver.url)).send().await {
                let status: Value = status.json().await.unwrap_or(Value::Null);
                if status["value"]["ready"] == true {
                    break;
                }
            }
            assert!(started.elapsed() < Duration::from_secs(20), "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some((driver, browser))
    }
}

/// A browser session.
pub struct Browser {
    http: reqwest::Client,
    session: String,
}

impl Browser {
    /// Headless chromium with a 1366×768 window: a laptop's screen.
    pub async fn open(driver: &Driver, binary: &Path) -> Browser {
        let http = reqwest::Client::new();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary.to_str().unwrap(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1366,768", "--lang=en-US"],
            },
        }}});
        let answer: Value = http
            .post(format!("{}/session", driver.url))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session =
            answer["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {answer}")).to_owned();
        let browser = Browser { http, session: format!("{}/session/{session}", driver.url) };
        browser.command("POST", "/window/rect", json!({"width": 1366, "height": 768})).await;
        browser
    }

    async fn command(&self, method: &str, path: &str, body: Value) -> Value {
        self.try_command(method, path, body).await.unwrap_or_else(|error| panic!("webdriver {method} {path}: {error}"))
    }

    async fn try_command(&self, method: &str, path: &str, body: Value) -> Result<Value, String> {
        let url = format!("{}{path}", self.session);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        match answer["value"]["error"].as_str() {
            Some(error) => Err(format!("{error}: {}", answer["value"]["message"])),
            None => Ok(answer["value"].clone()),
        }
    }

    /// The text of `css` now, if the page has it (`None` while a page loads or reloads).
    async fn text_now(&self, css: &str) -> Option<String> {
        let found = self.try_command("POST", "/element", json!({"using": "css selector", "value": css})).await.ok()?;
        let element = found[ELEMENT].as_str()?.to_owned();
        let text = self.try_command("GET", &format!("/element/{element}/text"), Value::Null).await.ok()?;
        Some(text.as_str().unwrap_or_default().replace('\u{a0}', " "))
    }

    pub async fn goto(&self, url: &str) {
        self.command("POST", "/url", json!({"url": url})).await;
    }

    pub async fn url(&self) -> String {
        self.command("GET", "/url", Value::Null).await.as_str().unwrap().to_owned()
    }

    /// The element `css` selects, waiting up to ten seconds for it.
    pub async fn find(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            let answer: Value = self
                .http
                .post(format!("{}/element", self.session))
                .json(&json!({"using": "css selector", "value": css}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if let Some(id) = answer["value"][ELEMENT].as_str() {
                return id.to_owned();
            }
            assert!(started.elapsed() < Duration::from_secs(10), "no element {css} at {}", self.url().await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether some element matches `css` now.
    pub async fn has(&self, css: &str) -> bool {
        let answer = self.command("POST", "/elements", json!({"using": "css selector", "value": css})).await;
        answer.as_array().is_some_and(|found| !found.is_empty())
    }

    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.command("POST", &format!("/element/{element}/click"), json!({})).await;
    }

    /// Types `text` into the element (for a file input: the file's path). `\u{E007}` is Enter.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command("POST", &format!("/element/{element}/value"), json!({"text": text})).await;
    }

    /// The element's visible text, no-break spaces as spaces.
    pub async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        let text = self.command("GET", &format!("/element/{element}/text"), Value::Null).await;
        text.as_str().unwrap_or_default().replace('\u{a0}', " ")
    }

    /// Waits up to `seconds` until the text of `css` satisfies `done`; the text.
    pub async fn wait_text(&self, css: &str, seconds: u64, done: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let text = self.text_now(css).await;
            if let Some(text) = &text {
                if done(text) {
                    return text.clone();
                }
            }
            if started.elapsed() > Duration::from_secs(seconds) {
                panic!("{css} says {text:?} at {}; the page: {:?}", self.url().await, self.text_now("body").await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits up to `seconds` until the page's URL contains `part`; on timeout the page's text
    /// says why.
    pub async fn wait_url(&self, part: &str, seconds: u64) {
        let started = Instant::now();
        while !self.url().await.contains(part) {
            if started.elapsed() > Duration::from_secs(seconds) {
                panic!("still at {}, which says: {}", self.url().await, self.text("body").await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let png = self.command("GET", "/screenshot", Value::Null).await;
        std::fs::write(path, base64(png.as_str().unwrap())).unwrap();
        println!("screenshot: {}", path.display());
    }

    pub async fn close(self) {
        self.command("DELETE", "", Value::Null).await;
    }
}

/// Decodes standard base64 (the screenshot's encoding).
fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let sextets: Vec<u8> = text.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(sextets.len() * 3 / 4);
    for chunk in sextets.chunks(4) {
        let mut bits = 0u32;
        for (i, s) in chunk.iter().enumerate() {
            bits |= u32::from(*s) << (18 - 6 * i);
        }
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[test]
fn base64_decodes_what_it_should() {
    assert_eq!(base64("aGVsbG8="), b"hello");
    assert_eq!(base64("aGVsbG8h"), b"hello!");
    assert_eq!(base64("aGk="), b"hi");
}
