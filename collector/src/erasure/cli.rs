//! `growth-collector erase`: reads user ids (or, with `--hashes`, user hashes) one a
//! line from stdin or `--input FILE` — never from the command line, so raw ids stay
//! out of `ps` and shell history — posts them to the running collector's admin port
//! (`--admin-addr`) with the admin token, and waits until they are erased, printing
//! the progress on stderr and the rows removed per table on stdout.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

pub use crate::config::EraseArgs;

/// Ids or hashes sent per request.
const PART: usize = 50_000;

/// Why `erase` failed.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// Reading the ids or the token.
    #[error("{0}")]
    Input(String),
    /// Talking to the collector.
    #[error("collector at {addr}: {message}")]
    Collector {
        /// The admin address.
        addr: SocketAddr,
        /// What went wrong.
        message: String,
    },
}

/// Runs `erase` against the collector's admin port `admin`.
pub async fn run(args: EraseArgs, admin: SocketAddr) -> Result<(), EraseError> {
    let token = read_token(&args)?;
    let mut text = String::new();
    match &args.input {
        Some(path) => {
            text = std::fs::read_to_string(path)
                .map_err(|e| EraseError::Input(format!("cannot read {}: {e}", path.display())))?;
        }
        None => {
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| EraseError::Input(format!("cannot read stdin: {e}")))?;
        }
    }
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .collect();
    if lines.is_empty() {
        return Err(EraseError::Input(
            "no ids given (one a line on stdin or in --input)".into(),
        ));
    }
    let field = if args.hashes {
        "user_hashes"
    } else {
        "user_ids"
    };
    let mut ids = Vec::new();
    for part in lines.chunks(PART) {
        let body = serde_json::json!({ field: part }).to_string();
        let (status, answer) = call(admin, "POST", "/admin/erasures", &token, Some(&body)).await?;
        if status != 202 {
            return Err(refused(admin, status, &answer));
        }
        let id = answer["id"].as_str().unwrap_or_default().to_owned();
        eprintln!(
            "erasure {id} queued: {} {}",
            answer["hashes"],
            if args.hashes { "hashes" } else { "ids" }
        );
        ids.push(id);
    }
    if args.no_wait {
        for id in ids {
            println!("{id}");
        }
        return Ok(());
    }
    let started = Instant::now();
    let mut total: BTreeMap<String, u64> = BTreeMap::new();
    for id in &ids {
        let mut last_state = String::new();
        loop {
            let (status, answer) =
                call(admin, "GET", &format!("/admin/erasures/{id}"), &token, None).await?;
            if status != 200 {
                return Err(refused(admin, status, &answer));
            }
            let state = answer["state"].as_str().unwrap_or_default().to_owned();
            if state != last_state {
                eprintln!(
                    "erasure {id}: {state} ({:.1}s)",
                    started.elapsed().as_secs_f64()
                );
                last_state = state.clone();
            }
            if let Some(error) = answer["last_error"].as_str() {
                eprintln!("erasure {id}: last attempt failed, retrying: {error}");
            }
            if state == "done" {
                if let Some(removed) = answer["removed"].as_object() {
                    for (table, rows) in removed {
                        *total.entry(table.clone()).or_default() += rows.as_u64().unwrap_or(0);
                    }
                }
                break;
            }
            if started.elapsed() > args.wait_timeout {
                return Err(EraseError::Collector {
                    addr: admin,
                    message: format!(
                        "erasure {id} not done after {:?}; it continues in the collector",
                        args.wait_timeout
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    println!(
        "erased {} in {:.1}s; rows removed:",
        lines.len(),
        started.elapsed().as_secs_f64()
    );
    println!("{:<24} {:>12}", "table", "rows");
    for (table, rows) in &total {
        println!("{table:<24} {rows:>12}");
    }
    Ok(())
}

fn read_token(args: &EraseArgs) -> Result<String, EraseError> {
    let token = match &args.token_file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            EraseError::Input(format!(
                "cannot read the token file {}: {e}",
                path.display()
            ))
        })?,
        None => std::env::var("GROWTH_ADMIN_TOKEN").unwrap_or_default(),
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err(EraseError::Input(
            "no admin token: --token-file FILE or GROWTH_ADMIN_TOKEN".into(),
        ));
    }
    Ok(token)
}

fn refused(addr: SocketAddr, status: u16, answer: &serde_json::Value) -> EraseError {
    EraseError::Collector {
        addr,
        message: format!(
            "HTTP {status}: {}",
            answer["error"].as_str().unwrap_or("no reason given")
        ),
    }
}

/// One HTTP/1.1 request on its own connection; the answer's status and JSON body.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> Result<(u16, serde_json::Value), EraseError> {
    let fail = |message: String| EraseError::Collector { addr, message };
    let mut stream = TcpStream::connect(addr).await.map_err(|e| {
        fail(format!(
            "cannot connect: {e} (is the collector running, and --admin-addr its admin address?)"
        ))
    })?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .and(stream.write_all(body.as_bytes()).await)
        .map_err(|e| fail(e.to_string()))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| fail("an answer without headers".into()))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| fail("an answer without a status".into()))?;
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    Ok((status, json))
}
