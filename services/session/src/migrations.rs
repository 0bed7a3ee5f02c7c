//! The `session_keys` schema: SQL files under `services/session/migrations/`,
//! embedded at build time and applied by `idm_db::migrate`.

pub static SESSION_KEYS: idm_db::Migrator = sqlx::migrate!("./migrations");

#[cfg(test)]
mod tests {
    /// Versions are applied by number, once: two migrations sharing one
    /// (say, from branches merged together) would skip the second silently.
    /// They also count up from 1 without gaps, which the adoption of the
    /// pre-sqlx `_migrations` list relies on (`idm_db::migrate`).
    #[test]
    fn versions_are_unique() {
        let versions: Vec<i64> = super::SESSION_KEYS.iter().map(|m| m.version).collect();
        let expected: Vec<i64> = (1..=versions.len() as i64).collect();
        assert_eq!(versions, expected);
    }
}
