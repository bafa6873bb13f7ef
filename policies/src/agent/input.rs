//! The policy input for each request, in Kata's shape for the fields the two
//! APIs share, so a Kata policy for those requests works unchanged.
//!
//! Kata's agent serialises its protobuf requests: the OCI spec travels as
//! `OCI` with Go-style field names (`Process.Args`, `Process.User.UID`,
//! `Linux.Namespaces[].Type`, `Root.Path`, `Hooks.Prestart`), except mounts,
//! whose fields are `destination`, `source`, `type_`, `options`. Our agent
//! receives OCI runtime-spec JSON (`process.args`, …); [`oci_spec`] and
//! [`oci_process`] rename the known fields and keep the rest as they are.
//! Fields only Cloister has (e.g. `rootfs`) keep our names.

use serde_json::{Map, Value};

/// Renames the keys of `obj` by `table` (runtime-spec name → Kata name);
/// keys not in the table are kept.
fn rename(
    obj: &Map<String, Value>,
    table: &[(&str, &str)],
    f: impl Fn(&str, &Value) -> Value,
) -> Value {
    let mut out = Map::with_capacity(obj.len());
    for (k, v) in obj {
        let name = table
            .iter()
            .find(|(from, _)| *from == k)
            .map_or(k.as_str(), |(_, to)| *to);
        out.insert(name.to_owned(), f(k, v));
    }
    Value::Object(out)
}

fn map_obj(v: &Value, table: &[(&str, &str)], f: impl Fn(&str, &Value) -> Value) -> Value {
    match v {
        Value::Object(o) => rename(o, table, f),
        other => other.clone(),
    }
}

fn map_arr(v: &Value, f: impl Fn(&Value) -> Value) -> Value {
    match v {
        Value::Array(a) => Value::Array(a.iter().map(f).collect()),
        other => other.clone(),
    }
}

const SPEC: &[(&str, &str)] = &[
    ("ociVersion", "Version"),
    ("process", "Process"),
    ("root", "Root"),
    ("hostname", "Hostname"),
    ("mounts", "Mounts"),
    ("hooks", "Hooks"),
    ("annotations", "Annotations"),
    ("linux", "Linux"),
];
const PROCESS: &[(&str, &str)] = &[
    ("terminal", "Terminal"),
    ("consoleSize", "ConsoleSize"),
    ("user", "User"),
    ("args", "Args"),
    ("env", "Env"),
    ("cwd", "Cwd"),
    ("capabilities", "Capabilities"),
    ("rlimits", "Rlimits"),
    ("noNewPrivileges", "NoNewPrivileges"),
    ("apparmorProfile", "ApparmorProfile"),
    ("oomScoreAdj", "OOMScoreAdj"),
    ("selinuxLabel", "SelinuxLabel"),
];
const USER: &[(&str, &str)] = &[
    ("uid", "UID"),
    ("gid", "GID"),
    ("additionalGids", "AdditionalGids"),
    ("username", "Username"),
    ("umask", "Umask"),
];
const CAPS: &[(&str, &str)] = &[
    ("bounding", "Bounding"),
    ("effective", "Effective"),
    ("inheritable", "Inheritable"),
    ("permitted", "Permitted"),
    ("ambient", "Ambient"),
];
const ROOT: &[(&str, &str)] = &[("path", "Path"), ("readonly", "Readonly")];
const MOUNT: &[(&str, &str)] = &[("type", "type_")];
const HOOKS: &[(&str, &str)] = &[
    ("prestart", "Prestart"),
    ("createRuntime", "CreateRuntime"),
    ("createContainer", "CreateContainer"),
    ("startContainer", "StartContainer"),
    ("poststart", "Poststart"),
    ("poststop", "Poststop"),
];
const HOOK: &[(&str, &str)] = &[
    ("path", "Path"),
    ("args", "Args"),
    ("env", "Env"),
    ("timeout", "Timeout"),
];
const LINUX: &[(&str, &str)] = &[
    ("uidMappings", "UIDMappings"),
    ("gidMappings", "GIDMappings"),
    ("sysctl", "Sysctl"),
    ("resources", "Resources"),
    ("cgroupsPath", "CgroupsPath"),
    ("namespaces", "Namespaces"),
    ("devices", "Devices"),
    ("seccomp", "Seccomp"),
    ("rootfsPropagation", "RootfsPropagation"),
    ("maskedPaths", "MaskedPaths"),
    ("readonlyPaths", "ReadonlyPaths"),
    ("mountLabel", "MountLabel"),
    ("intelRdt", "IntelRdt"),
];
const NAMESPACE: &[(&str, &str)] = &[("type", "Type"), ("path", "Path")];

/// An OCI runtime-spec Process in Kata's shape.
pub fn oci_process(p: &Value) -> Value {
    map_obj(p, PROCESS, |k, v| match k {
        "user" => map_obj(v, USER, |_, v| v.clone()),
        "capabilities" => map_obj(v, CAPS, |_, v| v.clone()),
        _ => v.clone(),
    })
}

/// An OCI runtime-spec config in Kata's shape (`OCI` of a
/// CreateContainerRequest).
pub fn oci_spec(spec: &Value) -> Value {
    map_obj(spec, SPEC, |k, v| match k {
        "process" => oci_process(v),
        "root" => map_obj(v, ROOT, |_, v| v.clone()),
        "mounts" => map_arr(v, |m| map_obj(m, MOUNT, |_, v| v.clone())),
        "hooks" => map_obj(v, HOOKS, |_, v| {
            map_arr(v, |h| map_obj(h, HOOK, |_, v| v.clone()))
        }),
        "linux" => map_obj(v, LINUX, |k, v| match k {
            "namespaces" => map_arr(v, |n| map_obj(n, NAMESPACE, |_, v| v.clone())),
            _ => v.clone(),
        }),
        _ => v.clone(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spec_fields_take_kata_names() {
        let spec = json!({
            "ociVersion": "1.1.0",
            "process": {"args": ["sh"], "env": ["A=1"], "cwd": "/", "terminal": false,
                        "user": {"uid": 0, "gid": 0},
                        "capabilities": {"bounding": ["CAP_KILL"]}, "noNewPrivileges": true},
            "root": {"path": "rootfs", "readonly": true},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid"]}],
            "hooks": {"prestart": [{"path": "/bin/x", "args": ["x"]}]},
            "linux": {"namespaces": [{"type": "pid"}], "maskedPaths": ["/proc/kcore"]},
            "annotations": {"a": "b"}
        });
        let k = oci_spec(&spec);
        assert_eq!(k["Version"], json!("1.1.0"));
        assert_eq!(k["Process"]["Args"], json!(["sh"]));
        assert_eq!(k["Process"]["User"]["UID"], json!(0));
        assert_eq!(
            k["Process"]["Capabilities"]["Bounding"],
            json!(["CAP_KILL"])
        );
        assert_eq!(k["Process"]["NoNewPrivileges"], json!(true));
        assert_eq!(k["Root"]["Path"], json!("rootfs"));
        assert_eq!(k["Mounts"][0]["type_"], json!("proc"));
        assert_eq!(k["Mounts"][0]["destination"], json!("/proc"));
        assert_eq!(k["Hooks"]["Prestart"][0]["Path"], json!("/bin/x"));
        assert_eq!(k["Linux"]["Namespaces"][0]["Type"], json!("pid"));
        assert_eq!(k["Linux"]["MaskedPaths"], json!(["/proc/kcore"]));
        assert_eq!(k["Annotations"]["a"], json!("b"));
    }
}
