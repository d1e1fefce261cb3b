//! HTTPS providers: Lasso speaks TLS (rustls) to a provider whose certificate chains to a private CA given in
//! `upstream.extra_ca_file`, resolving `localhost` through its off-loop resolver; without that CA the handshake is
//! refused and the client gets a clear -32010 naming the provider.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use support::{Chain, Config, Lasso, Provider, post, rpc};

struct TlsProvider {
    addr: SocketAddr,
    ca_pem: String,
    served: Arc<AtomicUsize>,
}

/// A JSON-RPC provider over HTTPS (keep-alive, Content-Length), certificate for `localhost` signed by a fresh CA.
fn tls_provider() -> TlsProvider {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let config = config.clone();
            let counter = counter.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = BufReader::new(rustls::StreamOwned::new(conn, stream));
                serve(&mut tls, &counter);
            });
        }
    });
    TlsProvider {
        addr,
        ca_pem: ca.pem(),
        served,
    }
}

fn serve<S: Read + Write>(io: &mut BufReader<S>, counter: &AtomicUsize) {
    loop {
        let mut length = None;
        let mut probe = false;
        let mut line = String::new();
        if io.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut h = String::new();
            if io.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                }
                probe |= k.eq_ignore_ascii_case("x-lasso-probe");
            }
        }
        let mut body = vec![0; length.unwrap_or(0)];
        if io.read_exact(&mut body).is_err() {
            return;
        }
        let req: Value = serde_json::from_slice(&body).unwrap();
        // Lasso's health probes (chain id at start, head polls) are not client traffic.
        let result = match req["method"].as_str() {
            Some("eth_chainId") if probe => json!("0x1"),
            Some("eth_blockNumber") if probe => json!("0x10"),
            _ => {
                counter.fetch_add(1, Ordering::SeqCst);
                json!({"tls":true,"method":req["method"]})
            }
        };
        let answer = json!({"jsonrpc":"2.0","id":req["id"],"result":result}).to_string();
        let out = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        let stream = io.get_mut();
        if stream
            .write_all(out.as_bytes())
            .and_then(|_| stream.flush())
            .is_err()
        {
            return;
        }
    }
}

fn config(provider: &TlsProvider, with_ca: bool) -> String {
    let mut config = Config::new();
    if with_ca {
        config = config.upstream("extra_ca_file", "ca.pem");
    }
    config
        .chain(
            Chain::new("ethereum", 1)
                .strategy("priority")
                .provider(Provider::new(
                    "tls-node",
                    &format!("https://localhost:{}/rpc", provider.addr.port()),
                )),
        )
        .yaml()
}

#[test]
fn https_provider_with_private_ca_serves_requests_over_pooled_tls() {
    let provider = tls_provider();
    let lasso = Lasso::builder(&config(&provider, true))
        .file("ca.pem", &provider.ca_pem)
        .workers(1)
        .start();
    for i in 0..5 {
        let resp = post(
            lasso.addr(),
            "/rpc/ethereum",
            &rpc(json!(i), "eth_blockNumber", json!([])),
        );
        assert_eq!(resp.status, 200, "{}", resp.describe());
        let v = resp.json();
        assert_eq!(v["id"], json!(i));
        assert_eq!(v["result"]["tls"], json!(true));
    }
    assert_eq!(provider.served.load(Ordering::SeqCst), 5);
}

#[test]
fn https_provider_with_unknown_ca_is_refused_with_a_clear_error() {
    let provider = tls_provider();
    let lasso = Lasso::builder(&config(&provider, false)).workers(1).start();
    let resp = post(
        lasso.addr(),
        "/rpc/ethereum",
        &rpc(json!(1), "eth_blockNumber", json!([])),
    );
    assert_eq!(resp.status, 502, "{}", resp.describe());
    let v = resp.json();
    assert_eq!(v["error"]["code"], json!(-32010));
    assert_eq!(
        v["error"]["data"]["attempts"][0]["provider"],
        json!("tls-node")
    );
    let why = v["error"]["data"]["attempts"][0]["error"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(why.contains("tls") || why.contains("certificate"), "{why}");
    assert_eq!(provider.served.load(Ordering::SeqCst), 0);
}
