/** A model could not be fetched or found: one line that names the repo/revision and says what to do. */
export class HubError extends Error {
  override name = 'HubError';
}

/**
 * The hub could not answer now (no network, a timeout, 5xx, 429): a start with the model already cached goes on
 * with the cache, as huggingface_hub does; "not found", "gated" and the like are final.
 */
export class HubUnavailableError extends HubError {
  override name = 'HubUnavailableError';
}
