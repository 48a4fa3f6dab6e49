//! Kubernetes metadata from a log file's path (and, for docker json-file, the container's
//! `config.v2.json` labels that cri-dockerd / dockershim write).
//!
//! Key decision: metadata comes from the node's own files, computed once per file (never per
//! line) and shared by its events through `Arc<Source>`. What only the API server knows
//! (labels, annotations, owner, image) is added after the tailer by the optional
//! `logs::kubernetes` stage.
//!
//! Layouts understood:
//! - `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log` (and rotated names);
//! - `/var/log/containers/<pod>_<namespace>_<container>-<id>.log` (kubelet symlinks);
//! - `/var/lib/docker/containers/<id>/<id>-json.log`.

use crate::event::K8sMeta;
use std::path::Path;

/// Metadata from a CRI pod-log path; `None` when the path does not have that shape.
pub fn from_pod_path(path: &Path) -> Option<K8sMeta> {
    let file = path.file_name()?.to_str()?;
    let container_dir = path.parent()?;
    let container = container_dir.file_name()?.to_str()?;
    let pod_dir = container_dir.parent()?.file_name()?.to_str()?;
    // Namespaces and pod names contain no '_'; the uid is last.
    let mut parts = pod_dir.splitn(3, '_');
    let (namespace, pod, pod_uid) = (parts.next()?, parts.next()?, parts.next()?);
    if namespace.is_empty() || pod.is_empty() || pod_uid.is_empty() {
        return None;
    }
    // `<restart>.log`, also `<restart>.log.<timestamp>` after rotation.
    let restart_count = file.split('.').next().and_then(|n| n.parse().ok());
    if !file.contains(".log") {
        return None;
    }
    Some(K8sMeta {
        namespace: namespace.into(),
        pod: pod.into(),
        pod_uid: pod_uid.into(),
        container: container.into(),
        container_id: None,
        restart_count,
        ..K8sMeta::default()
    })
}

/// Metadata from a `/var/log/containers` symlink name: `<pod>_<namespace>_<container>-<id>.log`.
/// The id may be cut short (the kubelet caps the name at 251 bytes). No pod uid.
pub fn from_containers_link(path: &Path) -> Option<K8sMeta> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".log")?;
    let (rest, id) = stem.rsplit_once('-')?;
    let mut parts = rest.splitn(3, '_');
    let (pod, namespace, container) = (parts.next()?, parts.next()?, parts.next()?);
    if pod.is_empty() || namespace.is_empty() || container.is_empty() || id.is_empty() {
        return None;
    }
    Some(K8sMeta {
        namespace: namespace.into(),
        pod: pod.into(),
        pod_uid: String::new(),
        container: container.into(),
        container_id: Some(id.into()),
        restart_count: None,
        ..K8sMeta::default()
    })
}

/// The container id of a docker json-file log path: `<dir>/<id>/<id>-json.log`.
pub fn docker_container_id(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let id = file.split("-json.log").next()?;
    let dir = path.parent()?.file_name()?.to_str()?;
    (id == dir && !id.is_empty()).then(|| id.to_string())
}

/// Kubernetes labels in a docker `config.v2.json` (`Config.Labels`), as cri-dockerd writes
/// them. Pure: takes the file's bytes.
pub fn from_docker_config(json: &[u8], container_id: &str) -> Option<K8sMeta> {
    #[derive(serde::Deserialize)]
    struct Cfg {
        #[serde(rename = "Config")]
        config: Option<Inner>,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        #[serde(rename = "Labels", default)]
        labels: Option<std::collections::HashMap<String, String>>,
    }
    let cfg: Cfg = serde_json::from_slice(json).ok()?;
    let labels = cfg.config?.labels?;
    let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
    let meta = K8sMeta {
        namespace: get("io.kubernetes.pod.namespace"),
        pod: get("io.kubernetes.pod.name"),
        pod_uid: get("io.kubernetes.pod.uid"),
        container: get("io.kubernetes.container.name"),
        container_id: Some(container_id.to_string()),
        restart_count: None,
        ..K8sMeta::default()
    };
    (!meta.pod.is_empty() || !meta.namespace.is_empty()).then_some(meta)
}

/// Metadata for a file found at `path` (the path events report), with `link` the
/// `/var/log/containers` symlink that points to it, if one was seen. Reads the docker
/// `config.v2.json` next to a json-file log when there is one (bounded: 1 MiB).
pub fn metadata(path: &Path, link: Option<&Path>) -> K8sMeta {
    if let Some(id) = docker_container_id(path) {
        let cfg = path.with_file_name("config.v2.json");
        let meta = read_bounded(&cfg, 1 << 20).and_then(|b| from_docker_config(&b, &id));
        return meta.unwrap_or(K8sMeta { container_id: Some(id), ..K8sMeta::default() });
    }
    let from_link = link.and_then(from_containers_link);
    let real = from_pod_path(path).or_else(|| {
        // Only the symlink was configured: its target has the pod path layout.
        std::fs::canonicalize(path).ok().and_then(|p| from_pod_path(&p))
    });
    match (real, from_link.or_else(|| from_containers_link(path))) {
        (Some(mut m), Some(l)) => {
            m.container_id = l.container_id;
            m
        }
        (Some(m), None) => m,
        (None, Some(l)) => l,
        (None, None) => K8sMeta::default(),
    }
}

fn read_bounded(path: &Path, max: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf).ok()?;
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_paths() {
        let m = from_pod_path(Path::new("/var/log/pods/ns_web-1_7c1e-2a/nginx/3.log")).unwrap();
        assert_eq!(
            m,
            K8sMeta {
                namespace: "ns".into(),
                pod: "web-1".into(),
                pod_uid: "7c1e-2a".into(),
                container: "nginx".into(),
                container_id: None,
                restart_count: Some(3),
                ..K8sMeta::default()
            }
        );
        let m = from_pod_path(Path::new("/var/log/pods/ns_p_u/c/0.log.20241128-061213")).unwrap();
        assert_eq!(m.restart_count, Some(0));
        assert!(from_pod_path(Path::new("/var/log/pods/nounderscore/c/0.log")).is_none());
        assert!(from_pod_path(Path::new("/x.log")).is_none());
    }

    #[test]
    fn container_links() {
        let m = from_containers_link(Path::new("/var/log/containers/web-1_default_my-app-9a8b7c.log")).unwrap();
        assert_eq!((m.pod.as_str(), m.namespace.as_str(), m.container.as_str()), ("web-1", "default", "my-app"));
        assert_eq!(m.container_id.as_deref(), Some("9a8b7c"));
        assert!(from_containers_link(Path::new("/var/log/containers/nodash.log")).is_none());
    }

    #[test]
    fn docker() {
        assert_eq!(
            docker_container_id(Path::new("/var/lib/docker/containers/abc/abc-json.log")).as_deref(),
            Some("abc")
        );
        assert_eq!(docker_container_id(Path::new("/var/lib/docker/containers/abc/def-json.log")), None);
        let cfg = br#"{"Config":{"Labels":{"io.kubernetes.pod.namespace":"jobs","io.kubernetes.pod.name":"p","io.kubernetes.pod.uid":"u","io.kubernetes.container.name":"c"}}}"#;
        let m = from_docker_config(cfg, "abc").unwrap();
        assert_eq!(
            (m.namespace.as_str(), m.pod.as_str(), m.pod_uid.as_str(), m.container.as_str()),
            ("jobs", "p", "u", "c")
        );
        assert!(from_docker_config(br#"{"Config":{"Labels":{}}}"#, "abc").is_none());
        assert!(from_docker_config(b"garbage", "abc").is_none());
    }
}
