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
