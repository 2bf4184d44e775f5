use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use async_fence::{serve_connection, Cx};
use async_io::Async;
use http_body_util::Full;
use hyper::{body::Bytes, Request, Response};

#[test]
fn dbg() {
let ex = Arc::new(async_executor::Executor::new());
futures_lite::future::block_on(ex.run(async {
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
    let addr = listener.get_ref().local_addr()?;
    let client = std::thread::spawn(move || {
        let mut client = TcpStream::connect(addr)?;
        client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut response = String::new();
        client.read_to_string(&mut response)?;
        eprintln!("client got {response:?}");
        std::io::Result::Ok(response)
    });

    let (socket, _) = listener.accept().await?;
    let handler = |cx: Cx, _req: Request<hyper::body::Incoming>| async move {
        eprintln!("handler");
        let fenced = cx.fencing().scope().fence(&cx, |_| async { "fenced work" }).await;
        eprintln!("handler done");
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(fenced.unwrap_or("cancelled")))))
    };
    let r = serve_connection(&Cx::new(ex.clone()), socket, handler).await;
    eprintln!("served {r:?}");
    let response = client.join().unwrap()?;
    assert!(response.starts_with("HTTP/1.1 200 OK"));
    assert!(response.ends_with("fenced work"));
    std::io::Result::Ok(())
}))
.unwrap();
}
