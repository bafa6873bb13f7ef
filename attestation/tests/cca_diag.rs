//! go-ccatoken and rust-ccatoken claim vectors in CBOR diagnostic notation:
//! `*All*`, `*Example*`, `*MandatoryOnly*` decode; `*Missing*`, `*Invalid*`
//! and the spurious-key ones are rejected. A small diagnostic-notation
//! reader (maps, arrays, ints, text, h'' bytes) turns them into CBOR values.
#![allow(clippy::unwrap_used)]

use ciborium::value::{Integer, Value};
use cloister_attestation::cca::{PlatformClaims, RealmClaims};

const TD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/cca/");

struct P<'a> {
    s: &'a [u8],
    i: usize,
}

impl P<'_> {
    /// Skip white space and `/ comment /` spans.
    fn ws(&mut self) {
        loop {
            while self.i < self.s.len() && (self.s[self.i] as char).is_whitespace() {
                self.i += 1;
            }
            if self.s.get(self.i) == Some(&b'/') {
                self.i += 1
                    + self.s[self.i + 1..]
                        .iter()
                        .position(|&c| c == b'/')
                        .unwrap()
                    + 1;
            } else {
                return;
            }
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn value(&mut self) -> Value {
        self.ws();
        match self.s[self.i] {
            b'{' => {
                self.i += 1;
                let mut m = Vec::new();
                while !self.eat(b'}') {
                    let k = self.value();
                    assert!(self.eat(b':'), "expected : at {}", self.i);
                    let v = self.value();
                    m.push((k, v));
                    self.eat(b',');
                }
                Value::Map(m)
            }
            b'[' => {
                self.i += 1;
                let mut a = Vec::new();
                while !self.eat(b']') {
                    a.push(self.value());
                    self.eat(b',');
                }
                Value::Array(a)
            }
            b'<' => {
                // << item >>: embedded CBOR, as a byte string
                assert_eq!(self.s[self.i + 1], b'<');
                self.i += 2;
                let inner = self.value();
                self.ws();
                assert_eq!(&self.s[self.i..self.i + 2], b">>");
                self.i += 2;
                let mut b = Vec::new();
                ciborium::ser::into_writer(&inner, &mut b).unwrap();
                Value::Bytes(b)
            }
            b'"' => {
                let start = self.i + 1;
                let end = start + self.s[start..].iter().position(|&c| c == b'"').unwrap();
                self.i = end + 1;
                Value::Text(String::from_utf8(self.s[start..end].to_vec()).unwrap())
            }
            b'h' => {
                assert_eq!(self.s[self.i + 1], b'\'');
                let start = self.i + 2;
                let end = start + self.s[start..].iter().position(|&c| c == b'\'').unwrap();
                self.i = end + 1;
                let hex: String = String::from_utf8(self.s[start..end].to_vec())
                    .unwrap()
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect();
                Value::Bytes(hex::decode(hex).unwrap())
            }
            _ => {
                let start = self.i;
                while self.i < self.s.len()
                    && (self.s[self.i] == b'-' || self.s[self.i].is_ascii_digit())
                {
                    self.i += 1;
                }
                let n: i64 = std::str::from_utf8(&self.s[start..self.i])
                    .unwrap()
                    .parse()
                    .unwrap();
                Value::Integer(Integer::from(n))
            }
        }
    }
}

fn diag(path: &str) -> Value {
    let text = std::fs::read_to_string(format!("{TD}{path}")).unwrap();
    P {
        s: text.as_bytes(),
        i: 0,
    }
    .value()
}

#[test]
fn diag_reader_matches_the_cbor_twins() {
    for (d, c) in [
        ("ccatoken-realm-claims.diag", "ccatoken-realm-claims.cbor"),
        (
            "ccatoken-platform-claims.diag",
            "ccatoken-platform-claims.cbor",
        ),
    ] {
        let v = diag(d);
        let bytes = std::fs::read(format!("{TD}{c}")).unwrap();
        let w: Value = ciborium::de::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(v, w, "{d}");
    }
}

#[test]
fn go_ccatoken_diag_vectors() {
    let mut n = 0;
    for (dir, platform) in [
        ("claims/go-ccatoken/platform", true),
        ("claims/go-ccatoken/realm", false),
    ] {
        for e in std::fs::read_dir(format!("{TD}{dir}")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().and_then(|x| x.to_str()) != Some("diag") {
                continue;
            }
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            let v = diag(&format!("{dir}/{name}"));
            let r = if platform {
                PlatformClaims::from_value(&v).map(|_| ())
            } else {
                RealmClaims::from_value(&v).map(|_| ())
            };
            let bad = name.contains("Missing") || name.contains("Invalid");
            assert_eq!(r.is_err(), bad, "{dir}/{name}: {r:?}");
            n += 1;
        }
    }
    assert_eq!(n, 15);
}

#[test]
fn rust_ccatoken_negative_diags() {
    for name in [
        "realm-claims+spurious-numeric-key.diag",
        "realm-claims+spurious-text-key.diag",
        "realm-claims-missing-challenge.diag",
    ] {
        let v = diag(&format!("claims/rust-ccatoken/{name}"));
        assert!(RealmClaims::from_value(&v).is_err(), "{name}");
    }
}
