/**
 * The arguments digest Vigil records on an approval: "sha256:" over the
 * canonical JSON of the tool arguments as its server decodes and re-encodes
 * them — object keys sorted by code point, no whitespace, numbers as
 * doubles in their shortest form, and <, >, &, U+2028, U+2029 escaped.
 * The SDK runs an approved action only when its own digest of the
 * arguments about to run equals the approved one.
 */

const ESCAPES: Record<string, string> = { "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029" };

function str(s: string): string {
  return JSON.stringify(s).replace(/[<>&\u2028\u2029]/g, (c) => ESCAPES[c]);
}

function byCodePoint(a: string, b: string): number {
  const x = [...a], y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0)! - y[i].codePointAt(0)!;
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

/** Encode a JSON value the way Vigil's server re-encodes decoded JSON. */
export function canonicalJson(value: unknown): string {
  if (value === null || value === undefined) return "null";
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false";
    case "string":
      return str(value);
    case "number":
      if (!Number.isFinite(value)) throw new RangeError("arguments hold a NaN or infinite number, which JSON cannot carry");
      return Object.is(value, -0) ? "-0" : JSON.stringify(value);
    case "object": {
      if (Array.isArray(value)) return "[" + value.map((v) => canonicalJson(v)).join(",") + "]";
      const o = value as Record<string, unknown>;
      const keys = Object.keys(o).filter((k) => o[k] !== undefined && typeof o[k] !== "function").sort(byCodePoint);
      return "{" + keys.map((k) => str(k) + ":" + canonicalJson(o[k])).join(",") + "}";
    }
    default:
      throw new TypeError(`arguments hold a ${typeof value}, which is not JSON`);
  }
}

async function sha256Hex(text: string): Promise<string> {
  const data = new TextEncoder().encode(text);
  const subtle = (globalThis as { crypto?: { subtle?: SubtleCrypto } }).crypto?.subtle;
  if (subtle) {
    const sum = new Uint8Array(await subtle.digest("SHA-256", data));
    return Array.from(sum, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  // Node 18 has no global crypto without a flag; node:crypto is its fallback.
  const mod = "node:crypto";
  const { createHash } = await import(mod);
  return createHash("sha256").update(data).digest("hex");
}

/** "sha256:<hex>" over the canonical JSON of the arguments (undefined/null is {}). */
export async function argumentsDigest(args?: Record<string, unknown> | null): Promise<string> {
  // Digest what goes on the wire: JSON.stringify's view (toJSON, dropped undefined, -0 as 0).
  const wire = JSON.parse(JSON.stringify(args ?? {})) as unknown;
  return "sha256:" + (await sha256Hex(canonicalJson(wire)));
}
