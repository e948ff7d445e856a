import { startRedisCluster } from './test/support/redis-cluster.js';
import { connectRedis } from './src/store/redis/client.js';
const c = await startRedisCluster();
try {
  const r = await connectRedis({ topology: { kind: 'cluster', seeds: c.seeds.split(',').map(s => ({ host: '127.0.0.1', port: Number(s.split(':')[1]) })) } });
  for (let shard = 0; shard < 16; shard++) {
    const key = `x:{${shard}}:outbox`;
    await r.call(['XGROUP', 'CREATE', key, 'relay', '0', 'MKSTREAM'], key);
    await r.call(['XADD', key, '*', 'a', String(shard)], key);
  }
  const reps = await Promise.all(Array.from({length: 16}, (_, shard) => { const key = `x:{${shard}}:outbox`; return r.call(['XREADGROUP', 'GROUP', 'relay', 'c', 'COUNT', '5', 'STREAMS', key, '>'], key); }));
  console.log(JSON.stringify(reps));
  for (let shard = 0; shard < 0; shard++) {
    const key = `x:{${shard}}:outbox`;
    const rep = await r.call(['XREADGROUP', 'GROUP', 'relay', 'c', 'COUNT', '5', 'STREAMS', key, '>'], key);
    console.log(shard, JSON.stringify(rep), (await c.masterOf(key)).port);
  }
  await r.close();
} finally { await c.stop(); }
