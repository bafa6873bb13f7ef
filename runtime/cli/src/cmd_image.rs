//! `cloister image`: host-side image tools. `encrypt` encrypts the layers of
//! a local OCI image layout with CoCo's attestation-agent key-provider
//! annotation, so a guest decrypts them with a KEK the KBS releases after
//! attestation. The work is done by `cloister_image::ocicrypt::layout`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use cloister_image::ocicrypt::layout;

/// Arguments of `cloister image`.
#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ImageCommand {
    /// Encrypt every layer of an OCI layout image (AES_256_CTR_HMAC_SHA256;
    /// layer keys wrapped A256GCM under a new random KEK named by --kid).
    Encrypt(EncryptArgs),
}

#[derive(Debug, clap::Args)]
struct EncryptArgs {
    /// Source image, `oci:DIR:TAG`.
    #[arg(long, value_name = "oci:DIR:TAG")]
    input: String,
    /// Destination, `oci:DIR:TAG` (created if missing; may be the source layout).
    #[arg(long, value_name = "oci:DIR:TAG")]
    output: String,
    /// KBS resource that will hold the KEK, `kbs:///REPO/TYPE/TAG`.
    #[arg(long, value_name = "KBS_URI")]
    kid: String,
    /// Where to write the KEK (32 raw bytes, mode 0600), for
    /// `cloister kbs admin set-resource REPO/TYPE/TAG FILE`.
    #[arg(long, value_name = "FILE")]
    kek_out: PathBuf,
}

/// Splits `oci:DIR:TAG` (the tag is after the last `:`).
fn oci_ref(s: &str) -> anyhow::Result<(PathBuf, String)> {
    let rest = s
        .strip_prefix("oci:")
        .with_context(|| format!("{s:?}: expected oci:DIR:TAG"))?;
    match rest.rsplit_once(':') {
        Some((dir, tag)) if !dir.is_empty() && !tag.is_empty() && !tag.contains('/') => {
            Ok((PathBuf::from(dir), tag.to_string()))
        }
        _ => bail!("{s:?}: expected oci:DIR:TAG"),
    }
}

fn write_kek(path: &Path, kek: &[u8; 32]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    f.write_all(kek)
        .with_context(|| format!("writing {}", path.display()))
}

/// Runs `cloister image`.
pub fn run(args: ImageArgs) -> anyhow::Result<()> {
    match args.command {
        ImageCommand::Encrypt(a) => {
            let (in_dir, in_tag) = oci_ref(&a.input)?;
            let (out_dir, out_tag) = oci_ref(&a.output)?;
            let path = cloister_kbs_client::ResourcePath::from_kbs_uri(&a.kid)?;
            let mut kek = zeroize::Zeroizing::new([0u8; 32]);
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut kek[..]);
            // The KEK is written first: an encrypted image whose KEK was lost
            // would be unreadable.
            write_kek(&a.kek_out, &kek)?;
            let done = layout::encrypt_layout(&in_dir, &in_tag, &out_dir, &out_tag, &a.kid, &kek)
                .inspect_err(|_| {
                    let _ = std::fs::remove_file(&a.kek_out);
                })
                .with_context(|| format!("encrypting {}", a.input))?;
            for (plain, enc) in &done.layers {
                println!("layer {plain} -> {enc}");
            }
            println!("manifest {}", done.manifest_digest);
            println!(
                "KEK written to {}; store it with: cloister kbs admin --kbs URL --key ADMIN_KEY set-resource {path} {}",
                a.kek_out.display(),
                a.kek_out.display()
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_refs_split_at_the_last_colon() {
        assert_eq!(
            oci_ref("oci:/tmp/a:b:v1").unwrap(),
            (PathBuf::from("/tmp/a:b"), "v1".to_string())
        );
        for bad in ["docker://x", "oci:dir", "oci::t", "oci:dir:"] {
            assert!(oci_ref(bad).is_err(), "{bad}");
        }
    }
}
