//! TLS termination for the data plane with rustls: PEM certificate chain and key from
//! the config, ALPN offering HTTP/2 and HTTP/1.1.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::{Problem, TlsConfig};

/// Build the acceptor, or a problem located at the offending field.
pub fn acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, Problem> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&cfg.cert).and_then(Iterator::collect).map_err(|e| {
            Problem::new("listen.tls.cert", format!("cannot read certificates from {}: {e}", cfg.cert.display()))
        })?;
    if certs.is_empty() {
        return Err(Problem::new("listen.tls.cert", format!("no certificate found in {}", cfg.cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| {
        Problem::new("listen.tls.key", format!("cannot read a private key from {}: {e}", cfg.key.display()))
    })?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Problem::new("listen.tls", format!("certificate and key do not work together: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
