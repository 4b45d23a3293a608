//! The floor: the smallest reverse proxy on sluice's own stack (tokio, hyper, hyper-util's
//! pooled client), with no routing, targeting, rewriting or accounting. `run.sh` measures it
//! beside sluice so that the report separates what the stack costs from what sluice adds.
//!
//!     sluice-floor <listen addr> <upstream addr>

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};

type Body = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;

/// A 502 with an empty body: the upstream could not be reached, or its URI not formed.
fn bad_gateway() -> Response<Body> {
    let mut response = Response::new(http_body_util::Empty::new().map_err(|never: Infallible| match never {}).boxed());
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: sluice-floor <listen addr> <upstream addr>");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse()?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Incoming> = Client::builder(TokioExecutor::new()).build(connector);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = service_fn(move |mut req: Request<Incoming>| {
                let client = client.clone();
                let uri = format!("http://{upstream}{}", req.uri().path_and_query().map_or("/", |p| p.as_str()));
                async move {
                    let Ok(uri) = uri.parse::<Uri>() else { return Ok::<_, Infallible>(bad_gateway()) };
                    *req.uri_mut() = uri;
                    let response = match client.request(req).await {
                        Ok(r) => r.map(|b| b.boxed()),
                        Err(_) => bad_gateway(),
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
