//! Every case and flow of testdata/cca/rim-vectors.json (see
//! testdata/cca/SOURCES.md), table-driven.

#![allow(clippy::unwrap_used)]

use cloister_measure::cca::vmm::{LaunchImages, QemuVirt};
use cloister_measure::cca::{
    data_descriptor, ripas_descriptor, HashAlgo, Ipa, RealmFlags, RealmMeasurement, RealmParams,
    RecParams, Rem, Rim, RmmVersion,
};
use serde_json::Value;

fn vectors() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/cca/rim-vectors.json"
    ))
    .expect("testdata/cca/rim-vectors.json");
    serde_json::from_str(&text).unwrap()
}

fn testdata(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/testdata/cca/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn algo(v: &Value) -> HashAlgo {
    v["hash_algo"].as_str().unwrap().parse().unwrap()
}

fn num(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(s) => u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap(),
        _ => panic!("not a number: {v}"),
    }
}

fn params(p: &Value) -> RealmParams {
    let flags = num(&p["flags"]);
    RealmParams {
        flags: RealmFlags {
            lpa2: flags & 1 != 0,
            sve: flags & 2 != 0,
            pmu: flags & 4 != 0,
        },
        s2sz: num(&p["s2sz"]) as u8,
        sve_vl: num(&p["sve_vl"]) as u8,
        num_bps: num(&p["num_bps"]) as u8,
        num_wps: num(&p["num_wps"]) as u8,
        pmu_num_ctrs: num(&p["pmu_num_ctrs"]) as u8,
        hash_algo: HashAlgo::from_rmi_encoding(num(&p["algorithm"]) as u8).unwrap(),
    }
}

fn granule_pattern() -> Vec<u8> {
    (0..4096u32).map(|i| ((7 * i + 3) & 0xff) as u8).collect()
}

fn prev(case: &Value) -> RealmMeasurement {
    RealmMeasurement::from_hex(algo(case), case["input"]["prev_rim_hex"].as_str().unwrap()).unwrap()
}

#[test]
fn every_case_reproduces() {
    let v = vectors();
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 15, "vector file changed: update this test");
    let mut checked = 0;
    for case in cases {
        let id = case["id"].as_str().unwrap();
        let a = algo(case);
        let op = case["op"].as_str().unwrap();
        let got = if op == "RMI_REALM_CREATE" {
            let p = params(&case["input"]["RmiRealmParams_measured_fields"]);
            // The non-zero words of the measured image match the vector.
            let img = p.measured_image();
            for (off, word) in case["input_struct_nonzero_words"].as_object().unwrap() {
                let off = num(&Value::String(off.clone())) as usize;
                assert_eq!(
                    hex::encode(&img[off..off + 8]),
                    word.as_str().unwrap(),
                    "{id} word {off:#x}"
                );
            }
            let nonzero = img.chunks(8).filter(|w| w.iter().any(|b| *b != 0)).count();
            assert_eq!(
                nonzero,
                case["input_struct_nonzero_words"]
                    .as_object()
                    .unwrap()
                    .len(),
                "{id}"
            );
            let rim = Rim::realm_create(&p, RmmVersion::V1).unwrap().measurement();
            if let Some(b64) = case["expected_rim_b64"].as_str() {
                use base64::Engine;
                assert_eq!(
                    base64::engine::general_purpose::STANDARD.encode(rim.as_bytes()),
                    b64,
                    "{id}"
                );
            }
            rim
        } else if op.starts_with("RMI_DATA_CREATE") {
            let ipa = Ipa::new(num(&case["input"]["ipa"])).unwrap();
            let measured = num(&case["input"]["flags"]) == 1;
            let g = granule_pattern();
            let p = prev(case);
            let content = a.hash(&g);
            if measured {
                assert_eq!(
                    hex::encode(&content[..a.digest_len()]),
                    case["content_hash_hex"].as_str().unwrap(),
                    "{id}"
                );
            }
            let desc = data_descriptor(&p, ipa, measured.then_some(&content));
            assert_eq!(
                hex::encode(desc),
                case["descriptor_hex"].as_str().unwrap(),
                "{id}"
            );
            let mut rim = Rim::resume(p, RmmVersion::V1, 48);
            if measured {
                rim.data_create(ipa, &g).unwrap();
            } else {
                rim.data_create_unmeasured(ipa);
            }
            rim.measurement()
        } else if op == "RMI_REC_CREATE" {
            let i = &case["input"];
            let gprs: Vec<u64> = i["gprs"].as_array().unwrap().iter().map(num).collect();
            let rec = RecParams {
                runnable: num(&i["flags"]) == 1,
                pc: num(&i["pc"]),
                gprs: gprs.try_into().unwrap(),
            };
            let img = rec.measured_image();
            for (off, word) in case["rec_params_nonzero_words"].as_object().unwrap() {
                let off = num(&Value::String(off.clone())) as usize;
                assert_eq!(
                    hex::encode(&img[off..off + 8]),
                    word.as_str().unwrap(),
                    "{id} word {off:#x}"
                );
            }
            assert_eq!(
                hex::encode(&a.hash(&img)[..a.digest_len()]),
                case["rec_params_hash_hex"].as_str().unwrap(),
                "{id}"
            );
            let mut rim = Rim::resume(prev(case), RmmVersion::V1, 48);
            rim.rec_create(&rec);
            rim.measurement()
        } else if op.starts_with("RMI_RTT_INIT_RIPAS") {
            let base = Ipa::new(num(&case["input"]["base"])).unwrap();
            let top = Ipa::new(num(&case["input"]["top"])).unwrap();
            let p = prev(case);
            assert_eq!(
                hex::encode(ripas_descriptor(&p, base, top)),
                case["descriptor_hex"].as_str().unwrap(),
                "{id}"
            );
            // RMM 2.0: not measured at all.
            let mut v2 = Rim::resume(p, RmmVersion::V2, 48);
            v2.rtt_init_ripas(base, top).unwrap();
            assert_eq!(
                v2.measurement(),
                p,
                "{id}: RMM 2.0 must not measure RTT_INIT_RIPAS"
            );
            let mut rim = Rim::resume(p, RmmVersion::V1, 48);
            rim.rtt_init_ripas(base, top).unwrap();
            rim.measurement()
        } else if op.starts_with("RSI_MEASUREMENT_EXTEND") {
            let mut rem = Rem::from_measurement(
                RealmMeasurement::from_hex(a, case["initial_rem_hex"].as_str().unwrap()).unwrap(),
            );
            for step in case["steps"].as_array().unwrap() {
                let data = hex::decode(step["data_hex"].as_str().unwrap()).unwrap();
                assert_eq!(data.len() as u64, num(&step["size"]));
                rem.extend(&data).unwrap();
                assert_eq!(
                    rem.measurement().to_hex(),
                    step["rem_after_hex"].as_str().unwrap(),
                    "{id}"
                );
            }
            checked += 1;
            continue;
        } else {
            panic!("unknown op {op} in {id}");
        };
        assert_eq!(
            got.to_hex(),
            case["expected_rim_hex"].as_str().unwrap(),
            "{id}"
        );
        checked += 1;
    }
    assert_eq!(checked, cases.len());
}

/// Replays the flows step by step with the low-level API, checking every
/// intermediate RIM the reference tool printed.
#[test]
fn every_flow_reproduces_step_by_step() {
    let v = vectors();
    let flows = v["flows"].as_array().unwrap();
    assert_eq!(flows.len(), 2);
    for flow in flows {
        let id = flow["id"].as_str().unwrap();
        let p = params(&flow["realm_params_measured"]);
        let steps = flow["steps"].as_array().unwrap();
        let want: Vec<&str> = steps
            .iter()
            .map(|s| s["rim_after_hex"].as_str().unwrap())
            .collect();
        let mut rim = Rim::realm_create(&p, RmmVersion::V1).unwrap();
        let mut got = vec![rim.measurement().to_hex()];
        match id {
            "qemu-no-payload-sha512" => {
                rim.init_ripas_range(0x4000_0000, 0x4800_0000).unwrap();
                got.push(rim.measurement().to_hex());
                rim.populate(0x4000_0000, &testdata("qemu-no-payload.dtb"))
                    .unwrap();
                got.push(rim.measurement().to_hex());
                rim.rec_create(&RecParams::boot(0x4000_0000, 0x4000_0000));
                got.push(rim.measurement().to_hex());
            }
            "qemu-kernel-initrd-sha256" => {
                rim.init_ripas_range(0x4000_0000, 0x8000_0000).unwrap();
                got.push(rim.measurement().to_hex());
                rim.populate(0x4000_0000, &testdata("linux.bin")).unwrap();
                got.push(rim.measurement().to_hex());
                rim.populate(0x4800_0000, b"INITRD CONTENT").unwrap();
                got.push(rim.measurement().to_hex());
                rim.populate(0x4820_0000, &testdata("qemu-kernel-initrd.dtb"))
                    .unwrap();
                got.push(rim.measurement().to_hex());
                rim.rec_create(&RecParams::boot(0x4000_0000, 0x4820_0000));
                got.push(rim.measurement().to_hex());
            }
            other => panic!("unknown flow {other}"),
        }
        assert_eq!(got, want, "{id}");
        assert_eq!(
            got.last().unwrap(),
            flow["expected_final_rim_hex"].as_str().unwrap()
        );
    }
}

/// The same flows through the QEMU layout: the layout must choose the
/// addresses the reference tool chose.
#[test]
fn flows_reproduce_through_qemu_layout() {
    let v = vectors();
    for flow in v["flows"].as_array().unwrap() {
        let id = flow["id"].as_str().unwrap();
        let p = params(&flow["realm_params_measured"]);
        let (ram, kernel, initrd, dtb) = match id {
            "qemu-no-payload-sha512" => (128 << 20, None, None, testdata("qemu-no-payload.dtb")),
            _ => (
                1 << 30,
                Some(testdata("linux.bin")),
                Some(b"INITRD CONTENT".to_vec()),
                testdata("qemu-kernel-initrd.dtb"),
            ),
        };
        let layout = QemuVirt {
            ram_size: ram,
            measurement_log: false,
        }
        .layout(kernel.as_deref(), initrd.as_ref().map(|i| i.len() as u64))
        .unwrap();
        let plan = layout
            .plan(
                p,
                RmmVersion::V1,
                LaunchImages {
                    kernel: kernel.as_deref(),
                    initrd: initrd.as_deref(),
                    dtb: &dtb,
                },
            )
            .unwrap();
        assert_eq!(
            plan.rim().unwrap().to_hex(),
            flow["expected_final_rim_hex"].as_str().unwrap(),
            "{id}"
        );
    }
}
