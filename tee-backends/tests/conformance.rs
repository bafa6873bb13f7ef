//! One conformance suite, run against every backend and attester that can
//! run here: host backends bind initdata deterministically and either
//! prepare or refuse with a fix; attesters bind report_data and their
//! evidence carries the initdata binding the guest checks.
#![cfg(feature = "host")]
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::path::Path;

use cloister_tee::evidence::{cca_claims, check_initdata, realm_claim_bytes, snp_layout};
use cloister_tee::guest::{Attester, FakeConfigFs, SimAttester, TsmAttester};
use cloister_tee::host::sim::{layout, SimBackend, SimPlatform, SimRmm, SimService};
use cloister_tee::host::{cca::CcaBackend, snp::SnpBackend, tdx::TdxBackend, HostOptions};
use cloister_tee::initdata::InitdataDigest;
use cloister_tee::{HostBackend, Launch, NoTee, PrepareError, TeeKind};

const INITDATA: &[u8] = b"algorithm = \"sha256\"\nversion = \"0.1.0\"\n[data]\nkey = \"value\"\n";
const OTHER: &[u8] = b"algorithm = \"sha256\"\nversion = \"0.1.0\"\n[data]\nkey = \"other\"\n";

fn launch(dir: &Path, initdata: &[u8]) -> Launch {
    let kernel = dir.join("kernel");
    let initramfs = dir.join("initrd");
    let firmware = dir.join("fw");
    std::fs::write(&kernel, vec![1u8; 50_000]).unwrap();
    std::fs::write(&initramfs, vec![2u8; 70_000]).unwrap();
    std::fs::write(&firmware, vec![3u8; 4096]).unwrap();
    Launch {
        kernel,
        initramfs,
        cmdline: "console=ttyS0".into(),
        vcpus: 1,
        memory_mib: 64,
        initdata: Some(initdata.to_vec()),
        firmware: Some(firmware),
    }
}

fn backends(dir: &Path) -> Vec<Box<dyn HostBackend>> {
    vec![
        Box::new(NoTee),
        Box::new(SimBackend::new(HostOptions {
            config_dir: dir.join("config"),
        })),
        Box::new(SnpBackend::default()),
        Box::new(TdxBackend::default()),
        Box::new(CcaBackend::default()),
    ]
}

#[test]
fn every_backend_prepares_or_refuses_with_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    let l = launch(dir.path(), INITDATA);
    for b in backends(dir.path()) {
        let state = tempfile::tempdir().unwrap();
        match b.prepare(&l, state.path()) {
            Ok(p) => assert!(
                matches!(b.kind(), TeeKind::None | TeeKind::Sim),
                "{} prepared: {p:?}",
                b.kind()
            ),
            Err(PrepareError::Unsupported { tee, reason }) => {
                assert_eq!(tee, b.kind());
                assert!(reason.contains("fix:"), "{tee}: {reason}");
            }
            Err(e) => panic!("{}: unexpected {e}", b.kind()),
        }
    }
}

/// Renders QEMU settings for a launch.
type SettingsFn = Box<dyn Fn(&Launch) -> cloister_tee::QemuSettings>;

#[test]
fn hardware_backends_bind_initdata_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let a = launch(dir.path(), INITDATA);
    let b = launch(dir.path(), OTHER);
    let settings: Vec<(TeeKind, SettingsFn)> = vec![
        (
            TeeKind::Snp,
            Box::new(|l| SnpBackend::default().settings(l).unwrap()),
        ),
        (
            TeeKind::Tdx,
            Box::new(|l| TdxBackend::default().settings(l).unwrap()),
        ),
        (
            TeeKind::Cca,
            Box::new(|l| CcaBackend::default().settings(l).unwrap()),
        ),
    ];
    for (tee, f) in settings {
        assert_eq!(f(&a), f(&a), "{tee} is not deterministic");
        assert_ne!(f(&a).objects, f(&b).objects, "{tee} does not bind initdata");
        let field = InitdataDigest::of(INITDATA).unwrap().for_tee(tee).unwrap();
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&field);
        assert!(
            f(&a).objects[0].contains(&b64),
            "{tee}: {:?}",
            f(&a).objects
        );
    }
}

/// An attester under test, with how to read report_data back out of its
/// evidence.
type Case = (Box<dyn Attester>, fn(&[u8]) -> Vec<u8>, Option<SimService>);

fn snp_report_data(e: &[u8]) -> Vec<u8> {
    e[snp_layout::REPORT_DATA..snp_layout::REPORT_DATA + 64].to_vec()
}

fn cca_challenge(e: &[u8]) -> Vec<u8> {
    realm_claim_bytes(TeeKind::Sim, e, cca_claims::CHALLENGE).unwrap()
}

fn attesters(dir: &Path) -> Vec<Case> {
    let host_data = InitdataDigest::of(INITDATA).unwrap().fitted(32);
    let fake_snp = FakeConfigFs::new(&dir.join("tsm"), "sev_guest", move |inblob| {
        let mut r = vec![0u8; snp_layout::REPORT_LEN];
        r[snp_layout::REPORT_DATA..snp_layout::REPORT_DATA + inblob.len()].copy_from_slice(inblob);
        r[snp_layout::HOST_DATA..snp_layout::HOST_DATA + 32].copy_from_slice(&host_data);
        r
    })
    .unwrap();
    let tsm = TsmAttester::probe(fake_snp).unwrap();

    let platform = SimPlatform::load_or_create(&dir.join("config")).unwrap();
    let k = vec![1u8; 5000];
    let plan = layout::plan(
        layout::SimImages {
            kernel: &k,
            initrd: &k,
            cmdline: "",
            vcpus: 1,
            memory_mib: 16,
        },
        cloister_measure::cca::HashAlgo::Sha256,
    )
    .unwrap();
    let mut rpv = [0u8; 64];
    rpv.copy_from_slice(&InitdataDigest::of(INITDATA).unwrap().fitted(64));
    let service = SimService::start(
        &dir.join("sim.sock"),
        SimRmm::new(platform, plan.rim().unwrap(), rpv),
    )
    .unwrap();
    let stream = std::os::unix::net::UnixStream::connect(service.socket()).unwrap();
    let sim = SimAttester::with_channel(Box::new(stream));
    vec![
        (Box::new(tsm), snp_report_data, None),
        (Box::new(sim), cca_challenge, Some(service)),
    ]
}

#[test]
fn every_attester_binds_report_data_and_initdata() {
    let dir = tempfile::tempdir().unwrap();
    for (attester, report_data_of, _service) in attesters(dir.path()) {
        let tee = attester.tee();
        for rd in [[0u8; 64], [0xA5; 64]] {
            let ev = attester.evidence(&rd).unwrap();
            assert_eq!(report_data_of(&ev), rd.to_vec(), "{tee}");
            check_initdata(tee, &ev, Some(INITDATA)).unwrap();
            let err = check_initdata(tee, &ev, Some(OTHER)).unwrap_err();
            assert!(err.to_string().contains("mismatch"), "{tee}: {err}");
        }
    }
}
