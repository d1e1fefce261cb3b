//! Configuration change messages: what the admin API and signals ask of the supervisor, and how it answers.

/// A configuration change asked of the supervisor.
pub enum ConfigChange {
    /// Re-read the file (SIGHUP, `POST /api/admin/reload`).
    ReloadFile,
    /// Replace the whole file with this YAML.
    Replace(String),
    /// Edit the file's YAML document.
    Edit(DocumentEdit),
}

/// An edit of the configuration document; its error says why the edit does not apply.
pub type DocumentEdit = Box<dyn FnOnce(&mut serde_norway::Value) -> Result<(), String> + Send>;

/// What the main thread is asked to do.
pub enum SupervisorCommand {
    Signal(i32),
    /// Apply a change; the reply is a summary, or why it was rejected (the running configuration stays).
    Change(
        ConfigChange,
        futures_channel::oneshot::Sender<Result<String, String>>,
    ),
}

/// Why a configuration change was not applied (the running configuration and the file stay as they were).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeError {
    /// The new document does not parse or validate (the message names the file, the key and the reason).
    Invalid(String),
    /// The edit does not apply to the document (no such chain or provider, ...).
    Edit(String),
    /// The new generation could not start (listeners, TLS roots, monitor thread).
    Start(String),
    /// The file could not be read or written.
    Io(String),
}

impl std::fmt::Display for ChangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChangeError::Invalid(why) | ChangeError::Edit(why) => f.write_str(why),
            ChangeError::Start(why) => write!(f, "the new configuration could not start: {why}"),
            ChangeError::Io(why) => write!(f, "the configuration file: {why}"),
        }
    }
}

impl std::error::Error for ChangeError {}
