//! TLS for `https://` upstreams (rustls with the ring provider; no OpenSSL).
//!
//! Certificates are always verified, against the public roots (webpki-roots) or,
//! with `ca=FILE` on the upstream, against the PEM certificates in that file only
//! (a private CA). The host name of the URL is sent as SNI and must be one the
//! certificate is for (a DNS name, or an IP address in its subjectAltName).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// One upstream's TLS settings, built once when the upstream is parsed.
#[derive(Clone)]
pub struct Tls {
    /// `ca=FILE`, when given (else the public roots).
    pub ca: Option<PathBuf>,
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("ca", &self.ca).finish()
    }
}

impl PartialEq for Tls {
    fn eq(&self, other: &Tls) -> bool {
        self.ca == other.ca
    }
}

impl Tls {
    /// The client settings: the public roots, or only the certificates in `ca`.
    /// An error names the file and says what is wrong with it.
    pub fn new(ca: Option<&Path>) -> Result<Tls, String> {
        let mut roots = RootCertStore::empty();
        match ca {
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Some(path) => {
                let shown = path.display();
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("cannot read ca={shown}: {}", pem_error(&e)))?;
                for cert in certs {
                    let cert = cert
                        .map_err(|e| format!("ca={shown} is not valid PEM: {}", pem_error(&e)))?;
                    roots.add(cert).map_err(|e| {
                        format!("ca={shown} holds a certificate that is not a usable CA: {e}")
                    })?;
                }
                if roots.is_empty() {
                    return Err(format!(
                        "ca={shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
                    ));
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls {
            ca: ca.map(Path::to_path_buf),
            config: Arc::new(config),
        })
    }

    /// The TLS handshake over `tcp` with `host` (SNI and the name checked).
    pub async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, String> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| format!("{host:?} is not a host name TLS can check"))?;
        TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| self.handshake_error(host, e))
    }

    fn handshake_error(&self, host: &str, e: std::io::Error) -> String {
        let trusted = match &self.ca {
            Some(ca) => format!("the CA in ca={}", ca.display()),
            None => "the public roots (give ca=FILE for a private CA)".to_string(),
        };
        let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
        let why = match inner {
            Some(rustls::Error::InvalidCertificate(c)) => match c {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    format!("its certificate is not signed by {trusted}")
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => format!(
                    "its certificate is not for the host name {host:?}: the URL must name a host the certificate is for"
                ),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "its certificate has expired".to_string()
                }
                other => format!("its certificate was refused ({other:?})"),
            },
            Some(other) => other.to_string(),
            None => e.to_string(),
        };
        format!("TLS handshake with {host} failed: {why}")
    }
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}
