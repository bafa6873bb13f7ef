//! The reference RMM's own realm builds (testdata/cca/tf-rmm-host, TF-RMM
//! v0.8.0 through its x86 host build): each scenario is replayed through the
//! calculator and must give the RIM the RMM computed. s9 holds a second REC
//! created not runnable, which the RMM does not measure.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::path::{Path, PathBuf};

use cloister_measure::cca::{HashAlgo, Ipa, RealmFlags, RealmParams, RecParams, Rim, RmmVersion};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/cca/tf-rmm-host")
}

fn hex_u64(s: &str) -> u64 {
    u64::from_str_radix(s, 16).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

/// Replays one scenario file; returns the RIM as hex.
fn replay(scen: &str) -> String {
    let mut algo = HashAlgo::Sha256;
    let (mut s2sz, mut bps, mut wps) = (40u8, 0u8, 0u8);
    let mut rim: Option<Rim> = None;
    for line in scen.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let w: Vec<&str> = line.split_whitespace().collect();
        match w[0] {
            "algo" => {
                algo = match w[1] {
                    "sha256" => HashAlgo::Sha256,
                    "sha512" => HashAlgo::Sha512,
                    other => panic!("algo {other}"),
                }
            }
            "s2sz" => s2sz = w[1].parse().unwrap(),
            "bps" => {
                bps = w[1].parse().unwrap();
                wps = w[3].parse().unwrap();
            }
            // The RPV never enters the RIM.
            "rpv" | "activate" | "attest" => {}
            "create" => {
                let params = RealmParams {
                    flags: RealmFlags::default(),
                    s2sz,
                    sve_vl: 0,
                    num_bps: bps,
                    num_wps: wps,
                    pmu_num_ctrs: 0,
                    hash_algo: algo,
                };
                rim = Some(Rim::realm_create(&params, RmmVersion::V1).unwrap());
            }
            "ripas" => rim
                .as_mut()
                .unwrap()
                .init_ripas_range(hex_u64(w[1]), hex_u64(w[2]))
                .unwrap(),
            "data" => {
                let bytes = std::fs::read(dir().join(w[2])).unwrap();
                rim.as_mut()
                    .unwrap()
                    .populate(hex_u64(w[1]), &bytes)
                    .unwrap();
            }
            "data_nm" => {
                let base = hex_u64(w[1]);
                for g in 0..w[2].parse::<u64>().unwrap() {
                    let ipa = Ipa::new(base + g * 4096).unwrap();
                    rim.as_mut().unwrap().data_create_unmeasured(ipa);
                }
            }
            // DATA_CREATE_UNKNOWN measures nothing.
            "unknown" => {}
            "rec" => {
                let n: Vec<u64> = w[2..].iter().map(|s| hex_u64(s)).collect();
                let mut gprs = [0u64; 8];
                gprs.copy_from_slice(&n[1..9]);
                rim.as_mut().unwrap().rec_create(&RecParams {
                    runnable: w[1] == "1",
                    pc: n[0],
                    gprs,
                });
            }
            other => panic!("unknown scenario line {other:?}"),
        }
    }
    rim.expect("the scenario creates a realm")
        .measurement()
        .to_hex()
}

#[test]
fn every_reference_rmm_realm_build_gives_its_rim() {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".scen").map(str::to_owned)
        })
        .collect();
    names.sort();
    assert_eq!(names.len(), 9, "{names:?}");
    for name in &names {
        let scen = std::fs::read_to_string(dir().join(format!("{name}.scen"))).unwrap();
        let want = std::fs::read_to_string(dir().join(format!("{name}.rim"))).unwrap();
        assert_eq!(replay(&scen), want.trim(), "{name}");
    }
}

#[test]
fn a_rec_created_not_runnable_leaves_the_rim_as_it_was() {
    let s1 = std::fs::read_to_string(dir().join("s1-kvmtool-sha256.rim")).unwrap();
    let s9 = std::fs::read_to_string(dir().join("s9-kvmtool-sha256-2vcpu.rim")).unwrap();
    assert_eq!(s1, s9);
    // And a runnable one changes it.
    let scen = std::fs::read_to_string(dir().join("s9-kvmtool-sha256-2vcpu.scen")).unwrap();
    let runnable = scen.replace("rec 0 0 0", "rec 1 0 0");
    assert_ne!(replay(&runnable), s9.trim());
}
