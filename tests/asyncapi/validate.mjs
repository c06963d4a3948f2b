// Validate an AsyncAPI document with the official parser: node validate.mjs FILE
// Prints the parser's diagnostics as JSON lines; exit status 1 when any is an error.
import { readFile } from 'node:fs/promises';
import { Parser } from '@asyncapi/parser';

const text = await readFile(process.argv[2], 'utf8');
const { document, diagnostics } = await new Parser().parse(text);
for (const d of diagnostics) {
  console.log(JSON.stringify({ severity: d.severity, code: d.code, message: d.message, path: d.path }));
}
const errors = diagnostics.filter((d) => d.severity === 0);
if (document === undefined || errors.length > 0) process.exit(1);
console.log(JSON.stringify({ valid: true, version: document.version(), channels: document.channels().all().map((c) => c.id()) }));
