package io.featurestream.flink;

import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;

import org.apache.flink.api.common.operators.ProcessingTimeService.ProcessingTimeCallback;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.streaming.runtime.tasks.ProcessingTimeService;

/**
 * Packs consecutive byte-array records into one batch record, so the Python operator that
 * follows crosses the Java/Python boundary once per batch instead of once per record.
 *
 * <p>A batch is (i32 length, record bytes)*. It is emitted when it holds {@code maxRecords}
 * records, {@code lingerMs} after its first record, before every checkpoint barrier and
 * watermark, and at the end of the input: nothing is ever buffered across a checkpoint, so the
 * operator needs no state. Just before a checkpoint barrier (and at the end of the input) it
 * also emits an empty batch: the checkpoint marker, which tells the operators downstream that
 * what they hold must be in Flink state before the barrier reaches them. The Python twin is
 * udfs/wire/frames.py.
 */
public class FrameBatcher extends AbstractStreamOperator<byte[]>
        implements OneInputStreamOperator<byte[], byte[]>, ProcessingTimeCallback {
    private static final long serialVersionUID = 1L;

    private final int maxRecords;
    private final long lingerMs;
    private transient ByteArrayOutputStream buffer;
    private transient int count;
    private transient boolean timerPending;

    public FrameBatcher(int maxRecords, long lingerMs) {
        this.maxRecords = maxRecords;
        this.lingerMs = lingerMs;
    }

    @Override
    public void open() throws Exception {
        super.open();
        buffer = new ByteArrayOutputStream(1 << 16);
    }

    @Override
    public void processElement(StreamRecord<byte[]> element) {
        byte[] record = element.getValue();
        buffer.write(ByteBuffer.allocate(4).putInt(record.length).array(), 0, 4);
        buffer.write(record, 0, record.length);
        count++;
        if (count >= maxRecords) {
            flush();
        } else if (!timerPending) {
            timerPending = true;
            ProcessingTimeService time = getProcessingTimeService();
            time.registerTimer(time.getCurrentProcessingTime() + lingerMs, this);
        }
    }

    @Override
    public void onProcessingTime(long timestamp) {
        timerPending = false;
        flush();
    }

    @Override
    public void processWatermark(Watermark mark) throws Exception {
        flush();
        super.processWatermark(mark);
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        flush();
        output.collect(new StreamRecord<>(new byte[0]));
        super.prepareSnapshotPreBarrier(checkpointId);
    }

    @Override
    public void finish() throws Exception {
        flush();
        output.collect(new StreamRecord<>(new byte[0]));
        super.finish();
    }

    private void flush() {
        if (count == 0) {
            return;
        }
        output.collect(new StreamRecord<>(buffer.toByteArray()));
        buffer.reset();
        count = 0;
    }
}
