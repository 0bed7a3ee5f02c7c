//! A tiny SMTP sink for tests: speaks just enough SMTP for a client to hand
//! over a message, keeps every message, and can be stopped (connections
//! refused) and started again on the same port to test redelivery.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct SmtpSink {
    pub addr: SocketAddr,
    messages: Arc<Mutex<Vec<String>>>,
    server: Mutex<Option<JoinHandle<()>>>,
}

async fn session(stream: TcpStream, messages: Arc<Mutex<Vec<String>>>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 idm-testkit sink\r\n").await?;
    let mut data: Option<String> = None;
    while let Some(line) = lines.next_line().await? {
        if let Some(body) = data.as_mut() {
            if line == "." {
                if let Ok(mut all) = messages.lock() {
                    all.push(decoded(&std::mem::take(body)));
                }
                data = None;
                write.write_all(b"250 2.0.0 queued\r\n").await?;
            } else {
                body.push_str(line.strip_prefix('.').unwrap_or(&line));
                body.push('\n');
            }
            continue;
        }
        let verb = line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => b"250 idm-testkit\r\n",
            "DATA" => {
                data = Some(String::new());
                b"354 end with <CRLF>.<CRLF>\r\n"
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"250 OK\r\n",
        };
        write.write_all(reply).await?;
    }
    Ok(())
}

fn serve(listener: TcpListener, messages: Arc<Mutex<Vec<String>>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let messages = Arc::clone(&messages);
            tokio::spawn(async move {
                let _ = session(stream, messages).await;
            });
        }
    })
}

impl SmtpSink {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let messages = Arc::new(Mutex::new(Vec::new()));
        let server = serve(listener, Arc::clone(&messages));
        Ok(Self {
            addr,
            messages,
            server: Mutex::new(Some(server)),
        })
    }

    /// Stops listening: new connections are refused until `resume`.
    pub fn stop(&self) {
        if let Some(server) = self.server.lock().ok().and_then(|mut s| s.take()) {
            server.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn resume(&self) -> anyhow::Result<()> {
        let listener = TcpListener::bind(self.addr).await?;
        let server = serve(listener, Arc::clone(&self.messages));
        if let Ok(mut slot) = self.server.lock() {
            *slot = Some(server);
        }
        Ok(())
    }

    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Waits (bounded) for a message to `to` beyond the first `skip` such
    /// messages, and returns it.
    pub async fn wait_for(
        &self,
        to: &str,
        skip: usize,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<String> = self
                .messages()
                .into_iter()
                .filter(|m| mentions_recipient(m, to))
                .collect();
            if let Some(message) = found.into_iter().nth(skip) {
                return Ok(message);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no mail to {to} within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Headers as received, then the body decoded as a mail client would show
/// it: each text part (plain text first, then HTML), transfer encoding
/// undone (mail-parser). What [`SmtpSink::messages`] holds.
pub fn decoded(message: &str) -> String {
    let Some((headers, _)) = message.split_once("\n\n") else {
        return message.to_owned();
    };
    let Some(parsed) = mail_parser::MessageParser::default().parse(message.as_bytes()) else {
        return message.to_owned();
    };
    let mut out = format!("{headers}\n\n");
    for i in 0..parsed.text_body_count() {
        if let Some(text) = parsed.body_text(i) {
            out.push_str(&text);
            out.push('\n');
        }
    }
    for i in 0..parsed.html_body_count() {
        if let Some(html) = parsed.body_html(i) {
            out.push_str(&html);
            out.push('\n');
        }
    }
    out
}

fn mentions_recipient(message: &str, to: &str) -> bool {
    message.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("to:")
            && l.to_ascii_lowercase().contains(&to.to_ascii_lowercase())
    })
}

/// The first run of six digits in a message's body (email and verification
/// codes). Headers are skipped (a random `Message-ID` can hold six digits),
/// and so are HTML colours (`#111111`): a mail without a code has none.
pub fn six_digit_code(message: &str) -> Option<String> {
    let header_end = ["\r\n\r\n", "\n\n"]
        .iter()
        .filter_map(|sep| message.find(sep).map(|at| at + sep.len()))
        .min()
        .unwrap_or(0);
    let bytes = &message.as_bytes()[header_end..];
    (0..bytes.len().saturating_sub(5)).find_map(|i| {
        let window = &bytes[i..i + 6];
        let bounded = (i == 0 || !(bytes[i - 1].is_ascii_digit() || bytes[i - 1] == b'#'))
            && bytes.get(i + 6).is_none_or(|b| !b.is_ascii_digit());
        (bounded && window.iter().all(u8::is_ascii_digit))
            .then(|| String::from_utf8_lossy(window).into_owned())
    })
}

/// The magic-link code (`idm_magic_code=…`) in a message.
pub fn magic_code(message: &str) -> Option<String> {
    let start = message.find("idm_magic_code=")? + "idm_magic_code=".len();
    Some(
        message[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect(),
    )
}
