//! Encrypting the layers of a local OCI image layout with the CoCo
//! key-provider annotation (what `cloister image encrypt` runs on the
//! host): every layer gets a fresh random layer key and nonce; the private
//! options are wrapped with AES-256-GCM under one KEK that the KBS will
//! release by its `kid`. Config and manifest fields this code does not
//! touch are kept as they are.

use std::fs;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::{aa::AnnotationPacket, cipher, CryptError, ANNOTATION_AA, ANNOTATION_PUBOPTS};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const LAYER_TYPES: [&str; 3] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
];

/// Why a layout could not be encrypted.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// Reading or writing a file.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON document of the layout is malformed.
    #[error("{}: {reason}", path.display())]
    BadJson {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// index.json has no manifest with this tag.
    #[error("{}: no manifest tagged {tag:?} (org.opencontainers.image.ref.name)", dir.display())]
    NoSuchTag {
        /// The layout.
        dir: PathBuf,
        /// The tag asked for.
        tag: String,
    },
    /// The tag names something other than an OCI image manifest.
    #[error("tag {tag:?} is a {media_type}: expected {OCI_MANIFEST} (copy one platform with `skopeo copy --format oci` first)")]
    NotAManifest {
        /// The tag.
        tag: String,
        /// Its media type.
        media_type: String,
    },
    /// A layer media type that can't be encrypted here.
    #[error("layer {digest} has media type {media_type}: expected an unencrypted OCI layer (tar, tar+gzip, tar+zstd)")]
    UnsupportedLayer {
        /// The layer digest.
        digest: String,
        /// Its media type.
        media_type: String,
    },
    /// Wrapping failed.
    #[error(transparent)]
    Crypt(#[from] CryptError),
}

/// What [`encrypt_layout`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedImage {
    /// Digest of the new manifest.
    pub manifest_digest: String,
    /// `(plaintext digest, ciphertext digest)` per layer, in order.
    pub layers: Vec<(String, String)>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LayoutError + '_ {
    move |source| LayoutError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_json(path: &Path) -> Result<Value, LayoutError> {
    let bytes = fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| LayoutError::BadJson {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf, LayoutError> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| LayoutError::BadJson {
            path: dir.join("index.json"),
            reason: format!("digest {digest:?}: expected sha256:<64 hex>"),
        })?;
    Ok(dir.join("blobs/sha256").join(hex))
}

fn write_blob(dir: &Path, bytes: &[u8]) -> Result<(String, u64), LayoutError> {
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
    let path = blob_path(dir, &digest)?;
    fs::write(&path, bytes).map_err(io(&path))?;
    Ok((digest, bytes.len() as u64))
}

fn descriptor_str<'a>(d: &'a Value, field: &str, path: &Path) -> Result<&'a str, LayoutError> {
    d.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| LayoutError::BadJson {
            path: path.to_path_buf(),
            reason: format!("descriptor without {field}"),
        })
}

/// Encrypts every layer of `input:input_tag` into the layout `output`
/// (created if missing; may be the input) tagged `output_tag`, wrapping each
/// layer key under `kek` for the KBS resource `kid`.
pub fn encrypt_layout(
    input: &Path,
    input_tag: &str,
    output: &Path,
    output_tag: &str,
    kid: &str,
    kek: &[u8; 32],
) -> Result<EncryptedImage, LayoutError> {
    // The kid must be one the guest can fetch.
    crate::resources::ResourcePath::from_kbs_uri(kid).map_err(|e| CryptError::BadKid {
        kid: kid.to_string(),
        reason: e.to_string(),
    })?;
    let index_path = input.join("index.json");
    let index = read_json(&index_path)?;
    let entry = index
        .get("manifests")
        .and_then(Value::as_array)
        .and_then(|ms| {
            ms.iter().find(|m| {
                m.pointer("/annotations/org.opencontainers.image.ref.name")
                    .and_then(Value::as_str)
                    == Some(input_tag)
            })
        })
        .ok_or_else(|| LayoutError::NoSuchTag {
            dir: input.to_path_buf(),
            tag: input_tag.to_string(),
        })?
        .clone();
    let media_type = descriptor_str(&entry, "mediaType", &index_path)?;
    if media_type != OCI_MANIFEST {
        return Err(LayoutError::NotAManifest {
            tag: input_tag.to_string(),
            media_type: media_type.to_string(),
        });
    }
    let manifest_path = blob_path(input, descriptor_str(&entry, "digest", &index_path)?)?;
    let mut manifest = read_json(&manifest_path)?;

    let blobs = output.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(io(&blobs))?;
    let layout_file = output.join("oci-layout");
    if !layout_file.exists() {
        fs::write(&layout_file, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io(&layout_file))?;
    }
    // The config travels unchanged.
    if let Some(config) = manifest
        .get("config")
        .and_then(|c| c.get("digest"))
        .and_then(Value::as_str)
    {
        let (from, to) = (blob_path(input, config)?, blob_path(output, config)?);
        if from != to && !to.exists() {
            fs::copy(&from, &to).map_err(io(&from))?;
        }
    }

    let mut done = Vec::new();
    let layers = manifest
        .get_mut("layers")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| LayoutError::BadJson {
            path: manifest_path.clone(),
            reason: "manifest without layers".into(),
        })?;
    for layer in layers.iter_mut() {
        let digest = descriptor_str(layer, "digest", &manifest_path)?.to_string();
        let media_type = descriptor_str(layer, "mediaType", &manifest_path)?.to_string();
        if !LAYER_TYPES.contains(&media_type.as_str()) {
            return Err(LayoutError::UnsupportedLayer { digest, media_type });
        }
        let src = blob_path(input, &digest)?;
        let tmp = blobs.join(format!(".encrypting-{}", std::process::id()));
        let enc = {
            let reader = BufReader::new(fs::File::open(&src).map_err(io(&src))?);
            let writer = BufWriter::new(fs::File::create(&tmp).map_err(io(&tmp))?);
            cipher::encrypt(reader, writer).map_err(io(&src))?
        };
        let dst = blob_path(output, &enc.digest)?;
        fs::rename(&tmp, &dst).map_err(io(&dst))?;
        let private =
            serde_json::to_vec(&enc.private).map_err(|e| CryptError::BadOptions(e.to_string()))?;
        let private = zeroize::Zeroizing::new(private);
        let packet = AnnotationPacket::wrap(kid, kek, &private)?;
        let obj = layer.as_object_mut().ok_or_else(|| LayoutError::BadJson {
            path: manifest_path.clone(),
            reason: "layer descriptor is not an object".into(),
        })?;
        obj.insert("mediaType".into(), json!(format!("{media_type}+encrypted")));
        obj.insert("digest".into(), json!(enc.digest));
        obj.insert("size".into(), json!(enc.size));
        let ann = obj
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(ann) = ann.as_object_mut() {
            ann.insert(ANNOTATION_AA.into(), json!(packet.to_annotation()));
            ann.insert(ANNOTATION_PUBOPTS.into(), json!(enc.public.to_annotation()));
        }
        done.push((digest, enc.digest.clone()));
    }

    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| LayoutError::BadJson {
        path: manifest_path.clone(),
        reason: e.to_string(),
    })?;
    let (manifest_digest, manifest_size) = write_blob(output, &manifest_bytes)?;

    let out_index_path = output.join("index.json");
    let mut out_index = if out_index_path.exists() {
        read_json(&out_index_path)?
    } else {
        json!({"schemaVersion": 2, "manifests": []})
    };
    let mut new_entry = entry.clone();
    if let Some(obj) = new_entry.as_object_mut() {
        obj.insert("digest".into(), json!(manifest_digest));
        obj.insert("size".into(), json!(manifest_size));
        obj.insert("annotations".into(), json!({ REF_NAME: output_tag }));
    }
    let list = out_index
        .get_mut("manifests")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| LayoutError::BadJson {
            path: out_index_path.clone(),
            reason: "index without manifests".into(),
        })?;
    list.retain(|m| {
        m.pointer("/annotations/org.opencontainers.image.ref.name")
            .and_then(Value::as_str)
            != Some(output_tag)
    });
    list.push(new_entry);
    let bytes = serde_json::to_vec(&out_index).map_err(|e| LayoutError::BadJson {
        path: out_index_path.clone(),
        reason: e.to_string(),
    })?;
    fs::write(&out_index_path, bytes).map_err(io(&out_index_path))?;
    Ok(EncryptedImage {
        manifest_digest,
        layers: done,
    })
}
