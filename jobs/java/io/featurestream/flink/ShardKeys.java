package io.featurestream.flink;

import java.util.Arrays;

import org.apache.flink.runtime.state.KeyGroupRangeAssignment;
import org.apache.flink.types.Row;

/**
 * Integer shard keys that land in evenly spread key groups, so shards are balanced over the
 * keyed operator's subtasks at any parallelism. The job keys its stream by {@code Row.of(key)}
 * ({@link ShardRecords}), the key PyFlink's keyed Python operator keeps its state under.
 */
public final class ShardKeys {
    private ShardKeys() {}

    /**
     * For each shard i, the smallest int key whose key group is i * maxParallelism / shards
     * (shards at most maxParallelism: one key group each). One pass over the keys, so one shard
     * per key group of a large max parallelism takes about maxParallelism * ln(maxParallelism)
     * hashes.
     */
    public static int[] forShards(int shards, int maxParallelism) {
        int[] shardOfKeyGroup = new int[maxParallelism];
        Arrays.fill(shardOfKeyGroup, -1);
        for (int shard = 0; shard < shards; shard++) {
            shardOfKeyGroup[(int) ((long) shard * maxParallelism / shards)] = shard;
        }
        int[] keys = new int[shards];
        int missing = shards;
        for (int key = 0; missing > 0; key++) {
            int keyGroup = KeyGroupRangeAssignment.assignToKeyGroup(Row.of(key), maxParallelism);
            int shard = shardOfKeyGroup[keyGroup];
            if (shard >= 0) {
                keys[shard] = key;
                shardOfKeyGroup[keyGroup] = -1;
                missing--;
            }
        }
        return keys;
    }
}
