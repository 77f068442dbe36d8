import { describe, expect, it } from 'vitest';
import { redactUrl } from '../../pipeline/loader-main.js';

describe('redactUrl', () => {
  it('hides the password of the Postgres URL the loader prints at start-up', () => {
    expect(redactUrl('postgres://ts:s3cret@db.example:5432/tickstream')).toBe(
      'postgres://ts:***@db.example:5432/tickstream',
    );
    expect(redactUrl('postgres://postgres@127.0.0.1:5432/tickstream')).toBe(
      'postgres://postgres@127.0.0.1:5432/tickstream',
    );
    expect(redactUrl('not a url :pw@host')).not.toContain('pw');
  });
});
