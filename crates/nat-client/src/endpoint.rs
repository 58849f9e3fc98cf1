//! Coordinator URLs as tonic endpoints (TLS for `https://`), and connecting to the first of
//! several.

use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::args::ConnectOptions;
use crate::error::{error_chain, ClientError};

/// The flag every coordinator URL comes from, named in URL errors.
const URL_FLAG: &str = "--coordinator";

/// How long opening one connection (TCP and TLS handshake) may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The coordinator URLs of a `--coordinator` value: one URL or several, comma-separated, in
/// order. An empty item is an error.
pub fn parse_urls(urls: &str) -> Result<Vec<String>, ClientError> {
    let mut list = Vec::new();
    for url in urls.split(',').map(str::trim) {
        if url.is_empty() {
            return Err(ClientError::Url {
                flag: URL_FLAG,
                url: urls.to_owned(),
                reason: "has an empty URL in its comma-separated list".to_owned(),
            });
        }
        list.push(url.to_owned());
    }
    Ok(list)
}

/// One coordinator URL as an endpoint (not yet connected; connect timeout
/// [`DEFAULT_CONNECT_TIMEOUT`]). `https://` URLs get TLS: the CA of `--ca-cert` (else the built-in
/// web PKI roots), the client certificate of `--cert`/`--key` when given, and the server name of
/// `--tls-server-name` (else the URL's host). An `http://` URL with a TLS flag set is an error
/// saying the URL must be https://; any other scheme is an error naming the URL.
pub fn endpoint(url: &str, options: &ConnectOptions) -> Result<Endpoint, ClientError> {
    let bad = |reason: String| ClientError::Url {
        flag: URL_FLAG,
        url: url.to_owned(),
        reason,
    };
    let scheme = url
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase())
        .ok_or_else(|| bad("has no scheme: use http://HOST:PORT or https://HOST:PORT".into()))?;
    let tls = match scheme.as_str() {
        "https" => true,
        "http" => {
            let flags = options.tls_flags();
            if !flags.is_empty() {
                return Err(bad(format!(
                    "must be https:// to use {} (TLS); http:// is plaintext",
                    flags.join(" and ")
                )));
            }
            false
        }
        other => {
            return Err(bad(format!(
                "has the unsupported scheme `{other}`: use http:// or https://"
            )))
        }
    };
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| bad(format!("is not a valid URL ({})", error_chain(&e))))?
        .connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    if !tls {
        return Ok(endpoint);
    }
    let mut config = ClientTlsConfig::new().timeout(DEFAULT_CONNECT_TIMEOUT);
    config = match options.ca() {
        Some(ca) => config.ca_certificate(ca.clone()),
        None => config.with_webpki_roots(),
    };
    if let Some(identity) = options.identity() {
        config = config.identity(identity.clone());
    }
    if let Some(name) = options.tls_server_name() {
        config = config.domain_name(name);
    }
    endpoint
        .tls_config(config)
        .map_err(|e| bad(format!("cannot be set up for TLS: {}", error_chain(&e))))
}

/// A channel to the first coordinator of `urls` (see [`parse_urls`]) that accepts a connection,
/// tried in order. With one URL the error is that URL's; with several it lists each URL's.
pub async fn connect(urls: &str, options: &ConnectOptions) -> Result<Channel, ClientError> {
    let mut endpoints = Vec::new();
    for url in parse_urls(urls)? {
        let endpoint = endpoint(&url, options)?;
        endpoints.push((url, endpoint));
    }
    let mut failures = Vec::new();
    let single = endpoints.len() == 1;
    for (url, endpoint) in endpoints {
        match endpoint.connect().await {
            Ok(channel) => return Ok(channel),
            Err(error) if single => {
                return Err(ClientError::Connect {
                    url,
                    detail: error_chain(&error),
                })
            }
            Err(error) => failures.push(format!("{url} ({})", error_chain(&error))),
        }
    }
    Err(ClientError::ConnectAny { failures })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::ConnectArgs;

    fn tls_options() -> ConnectOptions {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, cert.pem()).unwrap();
        ConnectArgs {
            ca_cert: Some(path),
            ..ConnectArgs::default()
        }
        .resolve()
        .unwrap()
    }

    #[test]
    fn urls_split_on_commas_and_empty_items_are_errors() {
        assert_eq!(
            parse_urls(" http://a:1 , https://b:2").unwrap(),
            ["http://a:1", "https://b:2"]
        );
        for bad in ["", "http://a:1,", ",http://a:1", "http://a:1,,http://b:2"] {
            let e = parse_urls(bad).unwrap_err().to_string();
            assert!(e.starts_with("--coordinator: "), "{bad:?}: {e}");
        }
    }

    #[test]
    fn schemes_are_checked() {
        let plain = ConnectOptions::default();
        endpoint("http://127.0.0.1:50051", &plain).unwrap();
        endpoint("https://coordinator.example:443", &plain).unwrap();
        endpoint("HTTPS://coordinator.example", &plain).unwrap();
        for (url, expected) in [
            ("127.0.0.1:50051", "has no scheme"),
            ("grpc://host:1", "unsupported scheme `grpc`"),
            ("http://bad host:1", "is not a valid URL"),
        ] {
            let e = endpoint(url, &plain).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("--coordinator: {url:?} ")) && e.contains(expected),
                "{url}: {e}"
            );
        }
    }

    #[test]
    fn tls_flags_need_an_https_url() {
        let options = tls_options();
        endpoint("https://localhost:50051", &options).unwrap();
        let e = endpoint("http://localhost:50051", &options)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "--coordinator: \"http://localhost:50051\" must be https:// to use --ca-cert (TLS); \
             http:// is plaintext"
        );
        // A token alone is fine over http:// (e.g. on loopback).
        let token = ConnectArgs {
            token: Some("t".into()),
            ..ConnectArgs::default()
        }
        .resolve()
        .unwrap();
        endpoint("http://127.0.0.1:1", &token).unwrap();
    }

    #[tokio::test]
    async fn connecting_names_the_url_or_every_url() {
        let plain = ConnectOptions::default();
        // Port 1 on loopback: nothing listens there.
        let e = connect("http://127.0.0.1:1", &plain)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cannot connect to the coordinator at http://127.0.0.1:1: "),
            "{e}"
        );
        let e = connect("http://127.0.0.1:1,http://127.0.0.1:2", &plain)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cannot connect to any coordinator: http://127.0.0.1:1 (")
                && e.contains("; http://127.0.0.1:2 ("),
            "{e}"
        );
    }
}
