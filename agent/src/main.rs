//! The Cloister guest agent: PID 1 inside the sandbox VM. It serves the
//! ttrpc API to the host runtime. It is not a general init system.

fn main() {
    eprintln!("cloister-agent: not built yet");
    std::process::exit(1);
}
