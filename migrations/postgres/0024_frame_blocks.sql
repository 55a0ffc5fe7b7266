-- Encapsulated Pixel Data: where the frames lie, 1024 frames to a row
-- (src/index/frame_blocks.rs). A row per frame made the index commit of a
-- whole-slide image (tens of thousands of frames) hold the writer for most
-- of a second. Frame n is in block (n - 1) / 1024, at byte
-- 16 * ((n - 1) % 1024): its offset and its length, big-endian u64 each.
CREATE TABLE instance_frame_blocks (
    instance_fk     BIGINT NOT NULL REFERENCES instances (id),
    block_number    BIGINT NOT NULL,
    locations       BYTEA NOT NULL,
    PRIMARY KEY (instance_fk, block_number)
);

INSERT INTO instance_frame_blocks (instance_fk, block_number, locations)
SELECT instance_fk, (frame_number - 1) / 1024,
       decode(string_agg(lpad(to_hex(byte_offset), 16, '0')
                         || lpad(to_hex(byte_length), 16, '0'), '' ORDER BY frame_number),
              'hex')
FROM instance_frames
GROUP BY instance_fk, (frame_number - 1) / 1024;

DROP TABLE instance_frames;
