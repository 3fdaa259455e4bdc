/** A model could not be fetched or found: one line that names the repo/revision and says what to do. */
export class HubError extends Error {
  override name = 'HubError';
}
