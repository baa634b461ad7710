//! `at-host watch` (contract 10.3): its lines, `--json`, its gap and end
//! messages and exit codes, against in-process servers with topics and a
//! scripted one.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use at_core::Kind;
use at_host::{Server, Topic};
use at_tests::{PATIENCE, at_host_bin, frame, read_reply, write};
use tokio::net::TcpListener;

async fn serve(topic: &Topic) -> Server {
    Server::builder()
        .calculator()
        .with_topic(topic)
        .tcp("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap()
}

async fn run(args: Vec<String>) -> Output {
    let child = tokio::task::spawn_blocking(move || {
        Command::new(at_host_bin())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    });
    tokio::time::timeout(PATIENCE, child)
        .await
        .expect("at-host watch exits in time")
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_3_prints_3_lines_and_exits_0() {
    let temp = Topic::new("temp", "").unwrap();
    temp.publish(&100).unwrap();
    let server = serve(&temp).await;
    let addr = server.tcp_addr().unwrap().to_string();
    // Publish until the command is done (its first event is the state).
    let done = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (temp, done) = (temp.clone(), done.clone());
        tokio::spawn(async move {
            let mut v = 101;
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                temp.publish(&v).unwrap();
                v += 1;
            }
        })
    };
    let out = run(args(&["watch", "--server", &addr, "--count", "3", "temp"])).await;
    done.store(true, Ordering::Relaxed);
    publisher.await.unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[0], "1 100", "{stdout}");
    let mut last = 100;
    for (line, n) in lines.iter().zip(1..) {
        let (got_n, value) = line.split_once(' ').expect("n value");
        assert_eq!(got_n, n.to_string(), "{stdout}");
        let value: i64 = value.parse().expect("an integer value");
        assert!(n == 1 || value > last, "{stdout}");
        last = value;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_prints_the_event_body() {
    let temp = Topic::new("temp", "").unwrap();
    temp.publish(&serde_json::json!({"deg": 21.5, "ok": [true]}))
        .unwrap();
    let server = serve(&temp).await;
    let addr = server.tcp_addr().unwrap().to_string();
    let out = run(args(&[
        "watch", "--server", &addr, "--count", "1", "--json", "temp",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "{\"topic\": \"temp\", \"n\": 1, \"value\": {\"deg\": 21.5, \"ok\": [true]}}\n"
    );
    // Without --json: n and the value, in the same spacing.
    let out = run(args(&["watch", "--server", &addr, "--count", "1", "temp"])).await;
    assert_eq!(text(&out.stdout), "1 {\"deg\": 21.5, \"ok\": [true]}\n");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_topic_is_exit_1() {
    let temp = Topic::new("temp", "").unwrap();
    let server = serve(&temp).await;
    let addr = server.tcp_addr().unwrap().to_string();
    let out = run(args(&["watch", "--server", &addr, "nope"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "error: unknown_topic: unknown topic\n");
    assert_eq!(text(&out.stdout), "");
    let out = run(args(&["watch", "--server", &addr, "--json", "nope"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        "{\"status\": \"error\", \"code\": \"unknown_topic\", \"message\": \"unknown topic\"}\n"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_are_exit_2() {
    for bad in [
        vec!["watch"],
        vec!["watch", "--count", "0", "temp"],
        vec!["watch", "--lease", "301", "temp"],
        vec!["watch", "--timeout", "0", "temp"],
    ] {
        let out = run(args(&bad)).await;
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out.stderr));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_3_when_the_server_stops() {
    let temp = Topic::new("temp", "").unwrap();
    temp.publish(&1).unwrap();
    let server = serve(&temp).await;
    let addr = server.tcp_addr().unwrap().to_string();
    let mut child = Command::new(at_host_bin())
        .args(["watch", "--server", &addr, "temp"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let first = tokio::task::spawn_blocking(move || {
        let line = lines_rx.recv_timeout(PATIENCE);
        (line, lines_rx)
    })
    .await
    .unwrap();
    assert_eq!(first.0.as_deref(), Ok("1 1"));
    server.shutdown().await;
    let status: ExitStatus = tokio::time::timeout(
        PATIENCE,
        tokio::task::spawn_blocking(move || {
            let status = child.wait().unwrap();
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            // The server says so before it closes (contract 10.3).
            assert_eq!(stderr, "end: server\n");
            status
        }),
    )
    .await
    .expect("watch exits once the server is gone")
    .unwrap();
    assert_eq!(status.code(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_and_the_end_go_to_stderr_and_the_end_is_exit_3() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let subscribe = read_reply(&mut stream).await;
        assert_eq!(
            subscribe.body,
            r#"{"func": "rpc.subscribe", "args": ["temp", 10, 250]}"#
        );
        let granted = r#"{"status": "success", "result": {"topic": "temp", "lease": 10, "interval": 250, "n": 0, "credit": null}}"#;
        let mut out = frame(Kind::Response, subscribe.header.seq, granted.as_bytes());
        for (seq, body) in [
            r#"{"topic": "temp", "n": 1, "value": "a"}"#,
            r#"{"topic": "temp", "n": 4, "value": "b"}"#,
            r#"{"topic": "temp", "n": 5, "end": "topic"}"#,
        ]
        .iter()
        .enumerate()
        {
            out.extend(frame(Kind::Notify, seq as u32 + 1, body.as_bytes()));
        }
        write(&mut stream, &out).await;
        // Held open until the command has exited.
        stream
    });
    let out = run(args(&[
        "watch",
        "--server",
        &addr,
        "--lease",
        "10",
        "--interval",
        "250",
        "temp",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "1 \"a\"\n4 \"b\"\n");
    assert_eq!(text(&out.stderr), "gap: events 2 to 3 lost\nend: topic\n");
    drop(server.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_it_with_exit_0() {
    // `at-host watch temp | head -1`.
    let temp = Topic::new("temp", "").unwrap();
    temp.publish(&1).unwrap();
    let server = serve(&temp).await;
    let addr = server.tcp_addr().unwrap().to_string();
    let mut child = Command::new(at_host_bin())
        .args(["watch", "--server", &addr, "temp"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line // the pipe closes here
    });
    let first = tokio::time::timeout(PATIENCE, first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, "1 1\n");
    let waiting = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    });
    tokio::pin!(waiting);
    // Events until it notices.
    let (status, stderr) = tokio::time::timeout(PATIENCE, async {
        let mut v = 2;
        loop {
            tokio::select! {
                done = &mut waiting => break done.unwrap(),
                () = tokio::time::sleep(Duration::from_millis(50)) => {
                    temp.publish(&v).unwrap();
                    v += 1;
                }
            }
        }
    })
    .await
    .expect("watch exits once its stdout is closed");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "");
    server.shutdown().await;
}
