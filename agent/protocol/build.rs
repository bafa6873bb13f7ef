//! Generates the protobuf messages and async ttrpc stubs for the agent API
//! into OUT_DIR. Nothing generated is ever written into src/.

use std::path::PathBuf;

use ttrpc_codegen::{Codegen, Customize, ProtobufCustomize};

const PROTOS: &[&str] = &["proto/health.proto", "proto/agent.proto"];

fn main() {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    Codegen::new()
        .out_dir(&out_dir)
        .inputs(PROTOS)
        .include("proto")
        .rust_protobuf()
        .customize(Customize {
            async_all: true,
            ..Default::default()
        })
        .rust_protobuf_customize(ProtobufCustomize::default().gen_mod_rs(false))
        .run()
        .expect("generating the agent API from proto/*.proto");

    // The generated files start with inner attributes (`#![allow(..)]`) and
    // inner doc comments, which `include!` inside a `mod {}` block does not accept. Strip them;
    // lib.rs puts equivalent outer attributes on each module.
    for entry in std::fs::read_dir(&out_dir).expect("reading OUT_DIR") {
        let path = entry.expect("reading OUT_DIR entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("reading generated code");
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| {
                    let l = l.trim_start();
                    !l.starts_with("#![") && !l.starts_with("//!")
                })
                .collect();
            std::fs::write(&path, kept.join("\n")).expect("rewriting generated code");
        }
    }
}
