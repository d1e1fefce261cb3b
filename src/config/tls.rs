//! TLS files a config names: PEM certificate bundles (the extra CA trusted for https/wss providers), read and
//! checked at load time so that a bad file is a config error naming the file (never quoting it).

use std::path::Path;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Reads every certificate of a PEM file; errors say why the file is unusable.
pub fn load_pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        // The PEM error can quote a line of the file: only the file is named.
        .map_err(|_| format!("invalid PEM in {}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(certs)
}
