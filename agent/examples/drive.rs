//! A development driver for the agent: connects to the host end of the
//! agent channel (a unix socket, e.g. QEMU's `-chardev socket,path=...`),
//! runs one command in a container on a block-device rootfs and prints what
//! comes back. Not part of the product; the runtime's client is
//! cloister-runtime. SOCKET is a unix socket path, or
//! `vsock-uds:PATH:PORT` for vhost-device-vsock's hybrid vsock socket.
//! Usage: drive SOCKET [--exec] [--stdin TEXT] [--signal N] -- CMD ARGS...

use cloister_protocol::agent as pb;
use cloister_protocol::agent_ttrpc::AgentServiceClient;
use cloister_protocol::health_ttrpc::HealthClient;
use cloister_protocol::ttrpc;
use cloister_protocol::ttrpc::asynchronous::transport::Socket;

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(30_000_000_000)
}

fn process(args: &[String]) -> serde_json::Value {
    serde_json::json!({
        "terminal": false, "user": {"uid": 0, "gid": 0}, "args": args,
        "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"], "cwd": "/"
    })
}

async fn drain(a: &AgentServiceClient, exec: &str, err: bool) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let req = pb::ReadStreamRequest {
            container_id: "c1".into(),
            exec_id: exec.into(),
            ..Default::default()
        };
        let r = if err {
            a.read_stderr(ctx(), &req).await
        } else {
            a.read_stdout(ctx(), &req).await
        };
        let d = r.expect("read").data;
        if d.is_empty() {
            return out;
        }
        out.extend(d);
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let sock = &argv[1];
    let dash = argv.iter().position(|a| a == "--").expect("-- CMD");
    let cmd: Vec<String> = argv[dash + 1..].to_vec();
    let opt = |name: &str| {
        argv[..dash]
            .iter()
            .position(|a| a == name)
            .map(|i| argv[i + 1].clone())
    };
    let exec = argv[..dash].iter().any(|a| a == "--exec");
    let s = match sock.strip_prefix("vsock-uds:") {
        // vhost-device-vsock's hybrid vsock: connect to its unix socket and
        // ask for a guest port with "CONNECT <port>\n"; it answers "OK <n>\n".
        Some(rest) => {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (path, port) = rest.rsplit_once(':').expect("vsock-uds:PATH:PORT");
            let mut st = tokio::net::UnixStream::connect(path)
                .await
                .expect("connect");
            st.write_all(format!("CONNECT {port}\n").as_bytes())
                .await
                .expect("CONNECT");
            let mut line = Vec::new();
            let mut b = [0u8; 1];
            while b[0] != b'\n' {
                st.read_exact(&mut b).await.expect("vsock handshake");
                line.push(b[0]);
            }
            println!(
                "# vsock handshake: {}",
                String::from_utf8_lossy(&line).trim()
            );
            Socket::new(st)
        }
        None => Socket::connect(format!("unix://{sock}"))
            .await
            .expect("connect"),
    };
    let c = ttrpc::asynchronous::Client::new(s);
    let h = HealthClient::new(c.clone());
    let a = AgentServiceClient::new(c);
    let t = std::time::Instant::now();
    let v = h
        .version(ctx(), &Default::default())
        .await
        .expect("version");
    println!("# version {v:?} ({:?})", t.elapsed());
    let d = a
        .get_guest_details(ctx(), &Default::default())
        .await
        .expect("details");
    println!("# details {d:?}");
    let e = a
        .get_evidence(
            ctx(),
            &pb::GetEvidenceRequest {
                report_data: vec![0; 64],
                ..Default::default()
            },
        )
        .await;
    println!("# evidence {:?}", e.map(|r| r.tee));
    let init = if exec {
        vec!["sleep".to_string(), "30".to_string()]
    } else {
        cmd.clone()
    };
    let mut spec = serde_json::json!({
        "ociVersion": "1.0.2", "process": process(&init), "root": {"path": "rootfs"}, "hostname": "c1",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}
        ],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]}
    });
    if opt("--nopidns").is_some() {
        spec["linux"]["namespaces"] =
            serde_json::json!([{"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]);
    }
    let rootfs = pb::Rootfs {
        kind: pb::rootfs::Kind::BLOCK.into(),
        source: "/dev/vda".into(),
        fstype: "ext4".into(),
        writable_overlay: true,
        ..Default::default()
    };
    let req = pb::CreateContainerRequest {
        container_id: "c1".into(),
        oci_spec: spec.to_string().into_bytes(),
        rootfs: protobuf::MessageField::some(rootfs),
        ..Default::default()
    };
    a.create_container(ctx(), &req).await.expect("create");
    a.start_container(
        ctx(),
        &pb::StartContainerRequest {
            container_id: "c1".into(),
            ..Default::default()
        },
    )
    .await
    .expect("start");
    let target = if exec {
        let req = pb::ExecProcessRequest {
            container_id: "c1".into(),
            exec_id: "e1".into(),
            process: process(&cmd).to_string().into_bytes(),
            ..Default::default()
        };
        a.exec_process(ctx(), &req).await.expect("exec");
        "e1"
    } else {
        ""
    };
    if let Some(text) = opt("--stdin") {
        let w = pb::WriteStreamRequest {
            container_id: "c1".into(),
            exec_id: target.into(),
            data: text.into_bytes(),
            ..Default::default()
        };
        a.write_stdin(ctx(), &w).await.expect("stdin");
    }
    a.close_stdin(
        ctx(),
        &pb::CloseStdinRequest {
            container_id: "c1".into(),
            exec_id: target.into(),
            ..Default::default()
        },
    )
    .await
    .expect("close stdin");
    if let Some(sig) = opt("--signal") {
        tokio::time::sleep(std::time::Duration::from_millis(3000)).await;
        let s = pb::SignalProcessRequest {
            container_id: "c1".into(),
            exec_id: target.into(),
            signal: sig.parse().expect("--signal N"),
            ..Default::default()
        };
        a.signal_process(ctx(), &s).await.expect("signal");
    }
    let out = drain(&a, target, false).await;
    let err = drain(&a, target, true).await;
    let w = a
        .wait_process(
            ctx(),
            &pb::WaitProcessRequest {
                container_id: "c1".into(),
                exec_id: target.into(),
                ..Default::default()
            },
        )
        .await
        .expect("wait");
    println!(
        "# stdout {:?}\n# stderr {:?}\n# status {} signal {}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&err),
        w.status,
        w.signal
    );
    a.remove_container(
        ctx(),
        &pb::RemoveContainerRequest {
            container_id: "c1".into(),
            timeout: 1,
            ..Default::default()
        },
    )
    .await
    .expect("remove");
    a.destroy_sandbox(ctx(), &Default::default())
        .await
        .expect("destroy");
    println!("# done in {:?}", t.elapsed());
}
