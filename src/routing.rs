//! Store-and-forward rules: which received instances go to which peers.
//!
//! A [`Route`] names a destination peer and conditions on the calling AE,
//! modality, SOP class and other indexed attributes, each a list of `*`/`?`
//! patterns (any may match; all listed conditions must hold). Ingest asks
//! the [`Router`] for destinations and queues them in the same index
//! transaction that records the instance; the forwarder delivers them.

use serde::Deserialize;

use crate::model::{AeTitle, IdError, InstanceMeta};

/// A rule as written in the config file (`[[routes]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    pub destination: String,
    #[serde(default)]
    pub calling_ae: Vec<String>,
    #[serde(default)]
    pub modality: Vec<String>,
    #[serde(default)]
    pub sop_class_uid: Vec<String>,
    #[serde(default)]
    pub study_description: Vec<String>,
    #[serde(default)]
    pub body_part_examined: Vec<String>,
    #[serde(default)]
    pub patient_id: Vec<String>,
    /// A forward is done only when the destination confirms it with
    /// Storage Commitment, not when its C-STORE succeeds.
    #[serde(default)]
    pub confirm_commitment: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub name: String,
    pub destination: AeTitle,
    pub confirm_commitment: bool,
    raw: RawRouteConditions,
}

/// Where one instance goes, by which rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub route: String,
    pub destination: AeTitle,
    pub confirm_commitment: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct RawRouteConditions {
    calling_ae: Vec<String>,
    modality: Vec<String>,
    sop_class_uid: Vec<String>,
    study_description: Vec<String>,
    body_part_examined: Vec<String>,
    patient_id: Vec<String>,
}

impl Route {
    pub fn from_raw(raw: RawRoute) -> Result<Self, IdError> {
        Ok(Route {
            name: raw.name,
            destination: AeTitle::new(&raw.destination)?,
            confirm_commitment: raw.confirm_commitment,
            raw: RawRouteConditions {
                calling_ae: raw.calling_ae,
                modality: raw.modality,
                sop_class_uid: raw.sop_class_uid,
                study_description: raw.study_description,
                body_part_examined: raw.body_part_examined,
                patient_id: raw.patient_id,
            },
        })
    }

    pub fn matches(&self, meta: &InstanceMeta, calling_ae: &str) -> bool {
        let any = |patterns: &[String], value: &str| {
            patterns.is_empty() || patterns.iter().any(|p| wildcard_match(p, value))
        };
        let c = &self.raw;
        any(&c.calling_ae, calling_ae)
            && any(&c.modality, &meta.series.modality)
            && any(&c.sop_class_uid, meta.sop_class_uid.as_str())
            && any(&c.study_description, &meta.study.study_description)
            && any(&c.body_part_examined, &meta.series.body_part_examined)
            && any(&c.patient_id, &meta.patient.patient_id)
    }
}

/// `*` matches any run, `?` one character; everything else literally.
pub fn wildcard_match(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    let (mut pi, mut vi) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = vi;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            vi = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// All configured routes.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new(routes: Vec<Route>) -> Self {
        Router { routes }
    }

    /// Every rule the instance matches.
    pub fn destinations(&self, meta: &InstanceMeta, calling_ae: &str) -> Vec<Destination> {
        self.routes
            .iter()
            .filter(|r| r.matches(meta, calling_ae))
            .map(|r| Destination {
                route: r.name.clone(),
                destination: r.destination.clone(),
                confirm_commitment: r.confirm_commitment,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::wildcard_match;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("CT", "CT"));
        assert!(!wildcard_match("CT", "CTX"));
        assert!(wildcard_match("MOD*", "MODALITY1"));
        assert!(wildcard_match("*HEAD*", "CT HEAD W/O"));
        assert!(wildcard_match("C?", "CR"));
        assert!(!wildcard_match("C?", "C"));
        assert!(wildcard_match("*", ""));
    }
}
