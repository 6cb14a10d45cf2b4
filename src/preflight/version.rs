//! Kubernetes minor versions ("1.25") and the version-skew rules that use them.
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A Kubernetes release line, `MAJOR.MINOR`. Parses "1.25", "v1.25", "v1.25.3", "1.25.3-gke.100"
/// and the "25+" minors some providers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Minor {
    pub major: u32,
    pub minor: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid Kubernetes version {0:?} (expected MAJOR.MINOR such as 1.31)")]
pub struct BadVersion(pub String);

impl Minor {
    pub const fn new(major: u32, minor: u32) -> Minor {
        Minor { major, minor }
    }

    /// The next release line.
    pub fn next(self) -> Minor {
        Minor::new(self.major, self.minor + 1)
    }

    /// Number of minors from `self` up to `other` (negative when `other` is older).
    pub fn minors_to(self, other: Minor) -> i64 {
        if self.major != other.major {
            return (other.major as i64 - self.major as i64) * 1000;
        }
        other.minor as i64 - self.minor as i64
    }

    /// From the apiserver's major/minor fields ("1", "34+").
    pub fn from_parts(major: &str, minor: &str) -> Option<Minor> {
        let digits = |s: &str| s.trim().trim_end_matches('+').parse::<u32>().ok();
        Some(Minor::new(digits(major)?, digits(minor)?))
    }
}

impl FromStr for Minor {
    type Err = BadVersion;
    fn from_str(s: &str) -> Result<Minor, BadVersion> {
        let bad = || BadVersion(s.to_string());
        let t = s.trim().trim_start_matches('v');
        let mut it = t.split(['.', '-', '+']);
        let major = it.next().and_then(|m| m.parse().ok()).ok_or_else(bad)?;
        let minor = it.next().and_then(|m| m.parse().ok()).ok_or_else(bad)?;
        Ok(Minor::new(major, minor))
    }
}

impl fmt::Display for Minor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl Serialize for Minor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Minor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Minor, D::Error> {
        let s = String::deserialize(d)?;
        if !s
            .trim_start_matches('v')
            .split('.')
            .take(2)
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(serde::de::Error::custom(format!(
                "invalid version {s:?}: expected \"MAJOR.MINOR\""
            )));
        }
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a kubelet of version `kubelet` may not run against an apiserver of version `apiserver`
/// (Kubernetes version-skew policy): never newer than the apiserver; at most three minors older,
/// two for kubelets older than 1.25.
pub fn kubelet_skew_problem(kubelet: Minor, apiserver: Minor) -> Option<String> {
    let behind = kubelet.minors_to(apiserver);
    let allowed = if kubelet < Minor::new(1, 25) { 2 } else { 3 };
    if behind < 0 {
        Some(format!("newer than the apiserver {apiserver}"))
    } else if behind > allowed {
        Some(format!(
            "{behind} minors older than the apiserver {apiserver} (at most {allowed} allowed for {kubelet})"
        ))
    } else {
        None
    }
}

/// Why a kube-proxy of version `proxy` may not run against an apiserver of version `apiserver`
/// beside a kubelet of version `kubelet` (Kubernetes version-skew policy): never newer than the
/// apiserver and at most three minors older; at most three minors older or newer than the
/// kubelet on its node; two instead of three for kube-proxy older than 1.25.
pub fn kube_proxy_skew_problem(
    proxy: Minor,
    apiserver: Minor,
    kubelet: Option<Minor>,
) -> Option<String> {
    let mut problems = Vec::new();
    // Against the apiserver the rule is the kubelet's (with kube-proxy's own version).
    problems.extend(kubelet_skew_problem(proxy, apiserver));
    if let Some(kubelet) = kubelet {
        let allowed = if proxy < Minor::new(1, 25) { 2 } else { 3 };
        let d = proxy.minors_to(kubelet);
        if d.abs() > allowed {
            problems.push(format!(
                "{} minors {} than the kubelet {kubelet} on its node (at most {allowed} allowed for {proxy})",
                d.abs(),
                if d > 0 { "older" } else { "newer" }
            ));
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_spellings() {
        for (s, want) in [
            ("1.25", (1, 25)),
            ("v1.34.4", (1, 34)),
            ("1.27.3-gke.100", (1, 27)),
            (" v1.9 ", (1, 9)),
        ] {
            assert_eq!(
                s.parse::<Minor>().unwrap(),
                Minor::new(want.0, want.1),
                "{s}"
            );
        }
        for s in ["", "1", "one.two", "v1.x"] {
            assert!(s.parse::<Minor>().is_err(), "{s}");
        }
        assert_eq!(Minor::from_parts("1", "34+"), Some(Minor::new(1, 34)));
    }

    #[test]
    fn ordering_is_numeric_not_lexical() {
        assert!(Minor::new(1, 9) < Minor::new(1, 16));
        assert_eq!(Minor::new(1, 30).minors_to(Minor::new(1, 33)), 3);
        assert_eq!(Minor::new(1, 33).minors_to(Minor::new(1, 30)), -3);
    }

    #[test]
    fn kubelet_skew_policy() {
        let api = Minor::new(1, 35);
        assert!(kubelet_skew_problem(Minor::new(1, 35), api).is_none());
        assert!(
            kubelet_skew_problem(Minor::new(1, 32), api).is_none(),
            "three older is allowed"
        );
        assert!(
            kubelet_skew_problem(Minor::new(1, 31), api).is_some(),
            "four older is not"
        );
        assert!(
            kubelet_skew_problem(Minor::new(1, 36), api).is_some(),
            "newer is not"
        );
        // Kubelets older than 1.25 may only be two minors behind.
        assert!(kubelet_skew_problem(Minor::new(1, 24), Minor::new(1, 26)).is_none());
        assert!(kubelet_skew_problem(Minor::new(1, 24), Minor::new(1, 27)).is_some());
        assert!(kubelet_skew_problem(Minor::new(1, 25), Minor::new(1, 28)).is_none());
    }
}
