from collections import Counter

import pytest

from bpm.data.sampler import PKBatchSampler
from bpm.errors import BpmError

# 10 identities; id 3 has a single image, id 7 two images, others 5.
LABELS = [pid for pid in range(10) for _ in range({3: 1, 7: 2}.get(pid, 5))]


def batches(sampler, epoch=0):
    sampler.set_epoch(epoch)
    return list(sampler)


def test_batch_is_p_ids_times_k_images():
    sampler = PKBatchSampler(LABELS, ids_per_batch=4, ims_per_id=3, seed=1)
    epoch = batches(sampler)
    assert len(epoch) == len(sampler) == 10 // 4
    for batch in epoch:
        labels = [LABELS[i] for i, _ in batch]
        counts = Counter(labels)
        assert len(counts) == 4 and set(counts.values()) == {3}
        # images are grouped per identity, K consecutive
        assert [labels[j * 3] for j in range(4)] == list(dict.fromkeys(labels))


def test_one_pass_over_ids_without_repeats():
    sampler = PKBatchSampler(LABELS, ids_per_batch=2, ims_per_id=2, seed=3)
    ids = [LABELS[i] for batch in batches(sampler) for i, _ in batch[::2]]
    assert sorted(ids) == list(range(10))


def test_small_ids_sampled_with_replacement_large_without():
    sampler = PKBatchSampler(LABELS, ids_per_batch=5, ims_per_id=4, seed=0)
    for epoch in range(5):
        for batch in batches(sampler, epoch):
            per_id: dict[int, list[int]] = {}
            for index, _ in batch:
                per_id.setdefault(LABELS[index], []).append(index)
            for pid, indices in per_id.items():
                assert len(indices) == 4
                if pid not in (3, 7):
                    assert len(set(indices)) == 4  # enough images: no repeats
                else:
                    assert all(LABELS[i] == pid for i in indices)


def test_deterministic_per_seed_and_epoch_and_skip():
    a = PKBatchSampler(LABELS, 2, 2, seed=5)
    b = PKBatchSampler(LABELS, 2, 2, seed=5)
    assert batches(a, 2) == batches(b, 2)
    assert batches(a, 2) != batches(a, 3)
    assert batches(a, 1) != batches(PKBatchSampler(LABELS, 2, 2, seed=6), 1)
    full = batches(a, 4)
    a.set_epoch(4, start_step=2)
    assert list(a) == full[2:]


def test_ranks_split_whole_identities_of_the_same_global_batch():
    single = PKBatchSampler(LABELS, 4, 2, seed=9)
    ranks = [PKBatchSampler(LABELS, 4, 2, seed=9, rank=r, world_size=2) for r in range(2)]
    glob = batches(single, 0)
    per_rank = [batches(r, 0) for r in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == len(glob)
    for step, batch in enumerate(glob):
        assert per_rank[0][step] + per_rank[1][step] == batch
        ids0 = {LABELS[i] for i, _ in per_rank[0][step]}
        ids1 = {LABELS[i] for i, _ in per_rank[1][step]}
        assert not ids0 & ids1


@pytest.mark.parametrize("p,k,world", [(1, 4, 1), (4, 0, 1), (3, 2, 2), (11, 2, 1)])
def test_bad_settings_are_clear_errors(p, k, world):
    with pytest.raises(BpmError):
        PKBatchSampler(LABELS, p, k, world_size=world)


def test_image_epochs_cover_the_training_images_in_proportion():
    """``epoch="images"``: as many P x K batches as the images fill; identities drawn in proportion
    to their image counts, P distinct ones per batch; a pure function of (seed, epoch)."""
    labels = [pid for pid in range(20) for _ in range(12 if pid < 10 else 3)]  # 150 images
    sampler = PKBatchSampler(labels, ids_per_batch=4, ims_per_id=2, seed=5, epoch="images")
    assert len(sampler) == 150 // 8 and len(PKBatchSampler(labels, 4, 2, seed=5)) == 20 // 4
    drawn = Counter()
    for epoch in range(40):
        for batch in batches(sampler, epoch):
            ids = [labels[i] for i, _ in batch]
            assert len(set(ids)) == 4 and all(c == 2 for c in Counter(ids).values())
            drawn.update(set(ids))
    rich = sum(drawn[p] for p in range(10)) / 10
    poor = sum(drawn[p] for p in range(10, 20)) / 10
    assert 2.5 < rich / poor < 5.5  # 4x the images -> about 4x the draws (without replacement within a batch)
    again = PKBatchSampler(labels, ids_per_batch=4, ims_per_id=2, seed=5, epoch="images")
    assert batches(again, 3) == batches(sampler, 3)
    again.set_epoch(3, start_step=2)
    assert list(again) == batches(sampler, 3)[2:]


def test_unknown_epoch_kind_is_refused():
    with pytest.raises(BpmError, match="--sampler_epoch"):
        PKBatchSampler(LABELS, 2, 2, epoch="steps")
