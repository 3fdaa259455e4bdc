import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestCertificate {
  /** PEM files, for TLS_CERT / TLS_KEY */
  certPath: string;
  keyPath: string;
  /** the certificate itself, for a client to trust (it is its own CA) */
  cert: Buffer;
  remove(): void;
}

/** A fresh self-signed certificate for 127.0.0.1 and localhost (openssl CLI), valid for a day. */
export function makeTestCertificate(): TestCertificate {
  const dir = mkdtempSync(join(tmpdir(), 'mega-asr-tls-'));
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', keyPath, '-out', certPath],
    { stdio: 'pipe' },
  );
  return { certPath, keyPath, cert: readFileSync(certPath), remove: () => rmSync(dir, { recursive: true, force: true }) };
}
