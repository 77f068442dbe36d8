// The one mapping from tickstream's Kafka keys to librdkafka properties, the messages made from
// librdkafka's authentication and TLS failures, and the config rules around them. In-process:
// the real brokers are in test/faults/kafka-secure.test.ts.
import { describe, expect, it } from 'vitest';
import {
  describeKafka,
  isKafkaSecurityFailure,
  type KafkaSecurity,
  kafkaClientProps,
  securityFailureOf,
} from '../../codecs/kafka-client.js';
import { kafkaSecurityOf, loadConfig } from '../../pipeline/config.js';

const base: KafkaSecurity = {
  protocol: 'sasl_ssl',
  saslMechanism: 'SCRAM-SHA-512',
  saslUsername: 'ops',
  saslPassword: 'hunter2-secret',
  sslCaLocation: '/etc/ca.pem',
  sslCertificateLocation: '',
  sslKeyLocation: '',
  sslKeyPassword: '',
};

describe('kafkaClientProps', () => {
  it('plaintext (or none): only the brokers', () => {
    expect(kafkaClientProps('b:9092')).toEqual({ 'metadata.broker.list': 'b:9092' });
    expect(kafkaClientProps('b:9092', { ...base, protocol: 'plaintext' })).toEqual({
      'metadata.broker.list': 'b:9092',
    });
  });

  it('sasl_ssl: SASL and TLS properties; empty files left to librdkafka defaults', () => {
    expect(kafkaClientProps('b:9093', base)).toEqual({
      'metadata.broker.list': 'b:9093',
      'security.protocol': 'sasl_ssl',
      event_cb: true,
      'sasl.mechanisms': 'SCRAM-SHA-512',
      'sasl.username': 'ops',
      'sasl.password': 'hunter2-secret',
      'ssl.ca.location': '/etc/ca.pem',
    });
  });

  it('ssl with a client certificate: no SASL properties', () => {
    const props = kafkaClientProps('b:9093', {
      ...base,
      protocol: 'ssl',
      sslCertificateLocation: '/c.pem',
      sslKeyLocation: '/k.pem',
      sslKeyPassword: 'kp',
    });
    expect(props).toMatchObject({
      'security.protocol': 'ssl',
      'ssl.certificate.location': '/c.pem',
      'ssl.key.location': '/k.pem',
      'ssl.key.password': 'kp',
    });
    expect(Object.keys(props).some((k) => k.startsWith('sasl.'))).toBe(false);
  });

  it('sasl_plaintext: no TLS properties', () => {
    const props = kafkaClientProps('b:9092', { ...base, protocol: 'sasl_plaintext', saslMechanism: 'PLAIN' });
    expect(props['sasl.mechanisms']).toBe('PLAIN');
    expect(Object.keys(props).some((k) => k.startsWith('ssl.'))).toBe(false);
  });
});

describe('security failures', () => {
  it('a SASL failure line becomes ERR_KAFKA naming the user and the keys, never the password', () => {
    const err = securityFailureOf(
      'sasl_ssl://b:9093/bootstrap: SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512 (after 300ms in state AUTH_REQ)',
      'b:9093',
      base,
    );
    expect(err?.code).toBe('ERR_KAFKA');
    expect(err?.message).toMatch(
      /b:9093 \(sasl_ssl, SCRAM-SHA-512 as user 'ops'\) refused the SASL credentials/,
    );
    expect(err?.message).toMatch(/kafkaSaslPassword/);
    expect(err?.message).not.toContain('hunter2');
    expect(isKafkaSecurityFailure(err)).toBe(true);
  });

  it('a TLS handshake failure points at kafkaSslCaLocation', () => {
    const err = securityFailureOf(
      'ssl://b:9093/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed',
      'b:9093',
      { ...base, protocol: 'ssl' },
    );
    expect(err?.message).toMatch(/TLS handshake with Kafka at b:9093 \(ssl\) failed .*kafkaSslCaLocation/);
  });

  it('other log lines are not failures; other errors are not security failures', () => {
    expect(
      securityFailureOf('Connect to ipv4#127.0.0.1:9093 failed: Connection refused', 'b', base),
    ).toBeNull();
    expect(isKafkaSecurityFailure(new Error('x'))).toBe(false);
    expect(describeKafka('b:9092')).toBe('b:9092');
  });
});

describe('config', () => {
  it('maps the kafka* keys', () => {
    const c = loadConfig({
      env: {},
      flags: {
        'kafka-security-protocol': 'sasl_ssl',
        'kafka-sasl-mechanism': 'PLAIN',
        'kafka-sasl-username': 'u',
        'kafka-sasl-password': 'p',
      },
    });
    expect(kafkaSecurityOf(c)).toMatchObject({
      protocol: 'sasl_ssl',
      saslMechanism: 'PLAIN',
      saslUsername: 'u',
    });
  });

  it('SASL without a user name, or min.insync.replicas above the replication factor: ERR_CONFIG', () => {
    expect(() => loadConfig({ env: {}, flags: { 'kafka-security-protocol': 'sasl_ssl' } })).toThrow(
      /kafkaSaslUsername .*required with kafkaSecurityProtocol sasl_ssl/,
    );
    expect(() => loadConfig({ env: {}, flags: { 'topic-min-insync-replicas': '2' } })).toThrow(
      /topicMinInsyncReplicas .*more than topicReplicationFactor 1/,
    );
    expect(() => loadConfig({ env: {}, flags: { 'kafka-sasl-mechanism': 'GSSAPI' } })).toThrow(
      /kafkaSaslMechanism/,
    );
  });
});
