package io.featurestream.flink;

import org.apache.flink.runtime.state.KeyGroupRangeAssignment;
import org.apache.flink.types.Row;

/**
 * Integer shard keys that land in evenly spread key groups, so shards are balanced over the
 * keyed operator's subtasks at any parallelism. The job keys its stream by {@code Row.of(key)}
 * ({@link ShardRecords}), the key PyFlink's keyed Python operator keeps its state under.
 */
public final class ShardKeys {
    private ShardKeys() {}

    /** For each shard i, the smallest int key whose key group is i * maxParallelism / shards. */
    public static int[] forShards(int shards, int maxParallelism) {
        int[] keys = new int[shards];
        for (int shard = 0; shard < shards; shard++) {
            int wanted = (int) ((long) shard * maxParallelism / shards);
            int key = 0;
            while (KeyGroupRangeAssignment.assignToKeyGroup(Row.of(key), maxParallelism) != wanted) {
                key++;
            }
            keys[shard] = key;
        }
        return keys;
    }
}
