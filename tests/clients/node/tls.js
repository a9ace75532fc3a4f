// node-postgres through pgshard with sslmode=verify-full against the test CA.
// Usage: node tls.js PORT CA_FILE. Exits non-zero on any error or wrong result.
'use strict';
const { Client } = require('pg');

async function main() {
  const [port, ca] = process.argv.slice(2);
  const url = `postgresql://app:app@127.0.0.1:${port}/app?sslmode=verify-full&sslrootcert=${ca}`;
  const client = new Client({ connectionString: url });
  await client.connect();
  if (!client.connection.stream.encrypted) {
    throw new Error('the connection is not encrypted');
  }
  const res = await client.query('SELECT $1::int + 1 AS n', [41]);
  if (res.rows[0].n !== 42) {
    throw new Error(`got ${JSON.stringify(res.rows)}`);
  }
  await client.end();
  console.log('node-postgres: verify-full ok');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
