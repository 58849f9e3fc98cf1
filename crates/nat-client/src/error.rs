//! What can go wrong while setting up or opening a connection.

use std::path::PathBuf;

/// An error from the connection flags, a URL, or opening a connection. Each names the flag or the
/// URL at fault.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A flag's value is wrong (`flag` is e.g. `--cert`, or `--token (NAT_TOKEN)`).
    #[error("{flag}: {message}")]
    Flag {
        /// The flag, as the user would type it.
        flag: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A file named by a flag could not be read.
    #[error("{flag}: cannot read {}: {source}", path.display())]
    Read {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// A coordinator URL is not usable (`flag` is the flag that gave it, e.g. `--coordinator`).
    #[error("{flag}: {url:?} {reason}")]
    Url {
        /// The flag that gave the URL.
        flag: &'static str,
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The coordinator at `url` could not be reached, or the TLS handshake with it failed.
    #[error("cannot connect to the coordinator at {url}: {detail}")]
    Connect {
        /// The URL tried.
        url: String,
        /// The whole cause chain, on one line (e.g. `invalid peer certificate: UnknownIssuer`).
        detail: String,
    },
    /// None of several coordinators could be reached; one `URL (why)` per coordinator.
    #[error("cannot connect to any coordinator: {}", failures.join("; "))]
    ConnectAny {
        /// `URL (why)` for each coordinator tried, in order.
        failures: Vec<String>,
    },
}

/// An error and its sources on one line, `outer: inner: innermost`, with repeated messages (a
/// wrapper that repeats its source's text) left out.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_is_one_line_without_repeats() {
        let inner = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        assert_eq!(
            error_chain(&Outer(inner)),
            "outer: invalid peer certificate: UnknownIssuer"
        );
        let flag = ClientError::Flag {
            flag: "--cert",
            message: "needs --key too".into(),
        };
        assert_eq!(flag.to_string(), "--cert: needs --key too");
    }
}
