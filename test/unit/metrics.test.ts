import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { RegistryMetrics } from '../../lib/observe/metrics';
import { SERVICE_NAME_PATTERN } from '../../lib/validate';

describe('stats()', () => {
  it('reports every service, one named "__proto__" included (a valid service name)', () => {
    expect(SERVICE_NAME_PATTERN.test('__proto__')).toBe(true);
    const m = new RegistryMetrics('p', {
      lists: () => [
        { service: '__proto__', size: 3 },
        { service: 'web', size: 2 },
      ],
      ownEndpoints: () => 0,
    });
    try {
      const { endpoints } = m.stats();
      expect(Object.keys(endpoints).sort()).toEqual(['__proto__', 'web']);
      expect(Object.getOwnPropertyDescriptor(endpoints, '__proto__')?.value).toBe(3);
      expect(JSON.parse(JSON.stringify(endpoints))).toEqual(JSON.parse('{"__proto__":3,"web":2}'));
      // Still a plain object, as the README says.
      expect(Object.getPrototypeOf(endpoints)).toBe(Object.prototype);
      expect(inspect(m.stats().endpoints)).toBe("{ ['__proto__']: 3, web: 2 }");
    } finally {
      m.close();
    }
  });
});
