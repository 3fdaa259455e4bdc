import { describe, expect, it } from 'vitest';
import { applyUpdate, liveConfig, newSession } from '../../src/http/realtime/session.js';

const models = { served: 'mega-asr', aliases: ['gpt-4o-transcribe'] };

describe('the live configuration of a transcription session', () => {
  it('unsets the language and context that a session.update removes (LiveSession.configure merges what it gets)', () => {
    const set = applyUpdate(newSession(models), { type: 'transcription', audio: { input: { transcription: { language: 'en', prompt: 'Weather.', keywords: ['Oslo'] } } } }, models);
    expect(liveConfig(set)).toMatchObject({ language: 'English', context: 'Weather.\nKeywords: Oslo' });
    const unset = applyUpdate(set, { type: 'transcription', audio: { input: { transcription: { language: null, prompt: '', keywords: [] } } } }, models);
    expect(unset.audio.input.transcription).not.toHaveProperty('language');
    // merged over the previous configuration, as LiveSession.configure does, nothing of the old one is left
    const merged = { ...liveConfig(set), ...liveConfig(unset) };
    expect(merged.language).toBeUndefined();
    expect(merged.context).toBeUndefined();
  });
});
