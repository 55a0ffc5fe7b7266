//! Remote application entities Tessera knows: where they listen and which
//! services they may use.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{AeTitle, IdError};

/// A service a peer may use (or, for forwarding, receive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerService {
    Store,
    Find,
    Move,
    Get,
    Commit,
    /// MPPS N-CREATE and N-SET.
    Mpps,
}

impl PeerService {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerService::Store => "store",
            PeerService::Find => "find",
            PeerService::Move => "move",
            PeerService::Get => "get",
            PeerService::Commit => "commit",
            PeerService::Mpps => "mpps",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "store" => Some(PeerService::Store),
            "find" => Some(PeerService::Find),
            "move" => Some(PeerService::Move),
            "get" => Some(PeerService::Get),
            "commit" => Some(PeerService::Commit),
            "mpps" => Some(PeerService::Mpps),
            _ => None,
        }
    }
}

/// A validated remote AE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Peer {
    #[serde(serialize_with = "ser_ae")]
    pub ae_title: AeTitle,
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub services: BTreeSet<PeerService>,
    /// The Specific Character Set of worklist answers to this peer; empty
    /// for UTF-8 (ISO_IR 192).
    pub worklist_charset: String,
}

fn ser_ae<S: serde::Serializer>(ae: &AeTitle, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(ae.as_str())
}

/// A peer as written in the config file or sent to the API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeer {
    pub ae_title: String,
    pub host: String,
    pub port: u16,
    #[serde(default)]
    pub tls: bool,
    /// Defaults to every service.
    pub services: Option<Vec<PeerService>>,
    /// Specific Character Set of worklist answers (default ISO_IR 192),
    /// for a modality that cannot read UTF-8.
    pub worklist_charset: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerError {
    #[error(transparent)]
    AeTitle(#[from] IdError),
    #[error("host {0:?} is empty or not a host name / IP address")]
    Host(String),
    #[error("port must be 1 to 65535")]
    Port,
    #[error("worklist_charset {0:?} is not one of {list}", list = crate::model::ANSWER_CHARSETS.join(", "))]
    Charset(String),
}

impl Peer {
    pub fn from_raw(raw: RawPeer) -> Result<Self, PeerError> {
        let trimmed = raw.host.trim();
        // "[fd00::5]" as in a URL: stored bare, so it can be connected to.
        let bracketed = trimmed.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        let host = bracketed.unwrap_or(trimmed).to_owned();
        let host_ok = if bracketed.is_some() || host.contains(':') {
            host.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            !host.is_empty()
                && host.len() <= 253
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        };
        if !host_ok {
            return Err(PeerError::Host(raw.host));
        }
        if raw.port == 0 {
            return Err(PeerError::Port);
        }
        let services = match raw.services {
            Some(list) => list.into_iter().collect(),
            None => [
                PeerService::Store,
                PeerService::Find,
                PeerService::Move,
                PeerService::Get,
                PeerService::Commit,
                PeerService::Mpps,
            ]
            .into_iter()
            .collect(),
        };
        let worklist_charset = match raw.worklist_charset.as_deref().map(str::trim) {
            None | Some("") | Some("ISO_IR 192") => String::new(),
            Some(c) if crate::model::ANSWER_CHARSETS.contains(&c) => c.to_owned(),
            Some(c) => return Err(PeerError::Charset(c.to_owned())),
        };
        Ok(Peer {
            ae_title: AeTitle::new(&raw.ae_title)?,
            host,
            port: raw.port,
            tls: raw.tls,
            services,
            worklist_charset,
        })
    }

    pub fn allows(&self, service: PeerService) -> bool {
        self.services.contains(&service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(ae: &str, host: &str, port: u16) -> RawPeer {
        RawPeer {
            ae_title: ae.into(),
            host: host.into(),
            port,
            tls: false,
            services: None,
            worklist_charset: None,
        }
    }

    #[test]
    fn validation() {
        let p = Peer::from_raw(raw("WORKSTATION", "10.0.0.5", 104)).expect("valid");
        assert!(p.allows(PeerService::Move));
        assert!(Peer::from_raw(raw("", "h", 1)).is_err());
        assert!(Peer::from_raw(raw("A", "bad host;rm", 1)).is_err());
        assert!(Peer::from_raw(raw("A", "h", 0)).is_err());
        let v6 = Peer::from_raw(raw("A", " [fd00::5] ", 104)).expect("bracketed IPv6");
        assert_eq!(v6.host, "fd00::5");
        assert!(Peer::from_raw(raw("A", "host:104", 104)).is_err());
        assert!(Peer::from_raw(raw("A", "[not-v6]", 104)).is_err());
    }
}
