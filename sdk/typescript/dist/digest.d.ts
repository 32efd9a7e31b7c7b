/**
 * The arguments digest Vigil records on an approval: "sha256:" over the
 * canonical JSON of the tool arguments as its server decodes and re-encodes
 * them — object keys sorted by code point, no whitespace, numbers as
 * doubles in their shortest form, and <, >, &, U+2028, U+2029 escaped.
 * The SDK runs an approved action only when its own digest of the
 * arguments about to run equals the approved one.
 */
/** Encode a JSON value the way Vigil's server re-encodes decoded JSON. */
export declare function canonicalJson(value: unknown): string;
/** "sha256:<hex>" over the canonical JSON of the arguments (undefined/null is {}). */
export declare function argumentsDigest(args?: Record<string, unknown> | null): Promise<string>;
