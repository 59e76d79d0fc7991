// What every page may read: who is logged in and what the server says about itself.

/** Used until (or if) GET /v1/system answers; the server's documented defaults. */
export const DEFAULT_LIMITS = {
  name_chars: 64,
  source_chars: 100000,
  message_chars: 8000,
  bio_chars: 200,
  memory_entry_chars: 1000,
  memory_entries: 500,
  password_min_chars: 8,
  password_max_chars: 256,
};

/** The smallest source the server accepts (shared/src/domain/source.rs). */
export const MIN_SOURCE_CHARS = 20;

export const session = {
  /** The /v1/me user, or null when logged out. */
  user: null,
  /** The /v1/system document, or null when it could not be read. */
  system: null,
};

export function limits() {
  return { ...DEFAULT_LIMITS, ...(session.system?.limits || {}) };
}

/** Where a generation job is remembered per character (this browser only), so lists can link
 * to a character's progress page. */
export function generationJobKey(characterId) {
  return `fastnpc.generation.${characterId}`;
}
