//! The floor of the HTTP stack the gateway is built on: Pingora's own reverse proxy with
//! nothing in its hooks but what nginx's `proxy_pass` does in `benches/load.sh` (one
//! upstream, keep-alive, the provider key set on the way). `benches/load.sh` runs it as
//! its `pingora` target, so the table shows what Pingora itself costs per request next to
//! nginx, and what the gateway adds above it.
//!
//!   cargo build --release --example bare_proxy
//!   target/release/examples/bare_proxy 127.0.0.1:LISTEN 127.0.0.1:UPSTREAM [threads]

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }

    async fn upstream_request_filter(
        &self,
        _: &mut Session,
        req: &mut RequestHeader,
        _: &mut (),
    ) -> Result<()> {
        req.insert_header("authorization", "Bearer sk-upstream")
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bare_proxy LISTEN UPSTREAM [threads]");
        std::process::exit(2);
    };
    let threads = args.next().and_then(|t| t.parse().ok()).unwrap_or(1);
    let conf = ServerConf {
        threads,
        work_stealing: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Bare { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
