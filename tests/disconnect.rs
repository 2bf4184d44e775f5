//! `WatchedStream` on real sockets: what it detects, and that it never loses or reorders a
//! byte.

mod common {
    pub mod executor;
}

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use async_fence::{on_flag, ReasonKind, WatchedStream, READ_AHEAD};
use async_io::{Async, Timer};
use common::executor::run_on_executor;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};

/// A connected pair: the client as a blocking std socket, the server side accepted.
async fn pair() -> (TcpStream, Async<TcpStream>) {
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
    let client = TcpStream::connect(listener.get_ref().local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

/// Bytes that show any loss or reordering.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// Waits for `flag` at most `limit`; `true` if it was set.
async fn set_within(flag: &async_fence::Flag, limit: Duration) -> bool {
    future::or(
        async {
            flag.wait().await;
            true
        },
        async {
            Timer::after(limit).await;
            false
        },
    )
    .await
}

#[test]
fn peer_close_sets_flag_while_app_is_not_reading_and_keeps_every_byte() {
    run_on_executor(|ex| {
        Box::pin(async move {
            let (mut client, server) = pair().await;
            let mut stream = WatchedStream::new(server, &ex);
            let made_at = line!() - 1;
            let sent = pattern(10_000);
            client.write_all(&sent).unwrap();
            drop(client);

            // The application has not read anything, yet the scope sees the disconnect.
            let fencing = on_flag(stream.disconnected(), "disconnect");
            let err = fencing.run(future::pending::<()>()).await.unwrap_err();
            assert_eq!(err.reasons().len(), 1);
            let reason = &err.reasons()[0];
            assert_eq!(reason.kind(), ReasonKind::Disconnect);
            assert_eq!(reason.code(), &"disconnect");
            assert_eq!(reason.message(), "peer closed the connection");
            // The location is the user's call that set the watch up.
            let at = reason
                .location()
                .expect("a disconnect reason has a location");
            assert_eq!((at.file(), at.line()), (file!(), made_at));
            assert_eq!(stream.buffered(), sent.len());

            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, sent);
            assert_eq!(stream.buffered(), 0);
        })
    });
}

#[test]
fn close_behind_more_than_read_ahead_is_seen_once_the_app_reads_down_to_it() {
    run_on_executor(|ex| {
        Box::pin(async move {
            let (client, server) = pair().await;
            let mut stream = WatchedStream::new(server, &ex);
            let sent = pattern(READ_AHEAD * 3 + 123);
            let writer = {
                let sent = sent.clone();
                std::thread::spawn(move || {
                    let mut client = client;
                    client.write_all(&sent).unwrap();
                })
            };

            // The watcher stops at READ_AHEAD: bounded memory, and no disconnect yet.
            let deadline = Instant::now() + Duration::from_secs(10);
            while stream.buffered() < READ_AHEAD && Instant::now() < deadline {
                Timer::after(Duration::from_millis(5)).await;
            }
            assert_eq!(stream.buffered(), READ_AHEAD);
            assert!(!set_within(stream.disconnected(), Duration::from_millis(100)).await);
            assert_eq!(stream.buffered(), READ_AHEAD);

            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.unwrap();
            writer.join().unwrap();
            assert_eq!(got.len(), sent.len());
            assert!(got == sent, "bytes were lost or reordered");
            assert!(stream.disconnected().is_set());
        })
    });
}

#[test]
fn reads_racing_the_watcher_keep_the_order() {
    run_on_executor(|ex| {
        Box::pin(async move {
            let (client, server) = pair().await;
            let mut stream = WatchedStream::new(server, &ex);
            let sent = pattern(300 * 1000);
            let writer = {
                let sent = sent.clone();
                std::thread::spawn(move || {
                    let mut client = client;
                    for (i, chunk) in sent.chunks(1000).enumerate() {
                        client.write_all(chunk).unwrap();
                        if i % 50 == 0 {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                    }
                })
            };
            // Small reads, so the watcher and the application take turns on the socket.
            let mut got = Vec::new();
            let mut buf = [0u8; 777];
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            writer.join().unwrap();
            assert_eq!(got.len(), sent.len());
            assert!(got == sent, "bytes were lost or reordered");
            assert_eq!(
                stream.disconnected().message().as_deref(),
                Some("peer closed the connection")
            );
        })
    });
}

#[test]
fn reset_sets_flag_with_the_error() {
    run_on_executor(|ex| {
        Box::pin(async move {
            let (client, server) = pair().await;
            let mut stream = WatchedStream::new(server, &ex);
            // Closing a socket with unread bytes makes the kernel send a RST.
            stream.write_all(b"unread by the client").await.unwrap();
            stream.flush().await.unwrap();
            Timer::after(Duration::from_millis(20)).await;
            drop(client);

            assert!(set_within(stream.disconnected(), Duration::from_secs(10)).await);
            let message = stream.disconnected().message().unwrap();
            assert!(message.starts_with("connection lost: "), "{message}");
            let err = on_flag(stream.disconnected(), "disconnect")
                .run(async {})
                .await
                .unwrap_err();
            assert_eq!(err.reasons()[0].kind(), ReasonKind::Disconnect);

            let mut buf = [0u8; 16];
            let read = stream.read(&mut buf).await.unwrap_err();
            assert_eq!(read.kind(), std::io::ErrorKind::ConnectionReset);
        })
    });
}

#[test]
fn half_close_counts_as_disconnect_and_the_reply_still_goes_out() {
    run_on_executor(|ex| {
        Box::pin(async move {
            let (mut client, server) = pair().await;
            let mut stream = WatchedStream::new(server, &ex);
            client.write_all(b"ping").unwrap();
            client.shutdown(Shutdown::Write).unwrap();

            assert!(set_within(stream.disconnected(), Duration::from_secs(10)).await);
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"ping");
            stream.write_all(b"pong").await.unwrap();
            drop(stream);
            let mut reply = Vec::new();
            client.read_to_end(&mut reply).unwrap();
            assert_eq!(reply, b"pong");
        })
    });
}

#[test]
fn open_connection_never_sets_the_flag() {
    run_on_executor(|ex| {
        Box::pin(async move {
            let (mut client, server) = pair().await;
            let stream = WatchedStream::new(server, &ex);
            client.write_all(b"keep-alive").unwrap();
            assert!(!set_within(stream.disconnected(), Duration::from_millis(150)).await);
            assert_eq!(stream.buffered(), 10);
            drop(client);
        })
    });
}

#[test]
fn dropping_the_stream_closes_the_connection_without_setting_the_flag() {
    run_on_executor(|ex| {
        Box::pin(async move {
            let (mut client, server) = pair().await;
            let stream = WatchedStream::new(server, &ex);
            let flag = stream.disconnected().clone();
            drop(stream);
            // The peer sees the end at once, although the executor has not run since.
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty());
            Timer::after(Duration::from_millis(20)).await;
            assert!(!flag.is_set());
        })
    });
}

/// The CPU time this thread has used, from `/proc/thread-self/stat` (clock ticks).
#[cfg(target_os = "linux")]
fn thread_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime 13th.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn watcher_does_not_spin_while_unread_bytes_wait() {
    run_on_executor(|ex| {
        Box::pin(async move {
            let (mut client, server) = pair().await;
            let stream = WatchedStream::new(server, &ex);
            client.write_all(&pattern(4096)).unwrap();
            // The executor runs on this thread only: a spinning watcher would burn it.
            let before = thread_cpu_ticks();
            let started = Instant::now();
            Timer::after(Duration::from_millis(400)).await;
            let wall = started.elapsed();
            let used = thread_cpu_ticks() - before;
            assert_eq!(stream.buffered(), 4096);
            // Ticks are 10 ms; a spinning loop would use about 40 of them.
            assert!(used <= 10, "used {used} ticks of CPU in {wall:?}");
            drop(client);
        })
    });
}
