"""Loaders: order, coverage, exact eval passes, global batches on the mesh, exact
resume (also through orbax and grain's handler), and refused or repositioned layouts."""

import dataclasses

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from baobab import data

MNIST_TRANSFORMS = (data.RandomCrop((28, 28), padding=2), data.RandomFlip(), data.Normalize(mean=0.13, std=0.31))


def _ids(n=40):
    return data.from_arrays({"id": np.arange(n, dtype=np.int32), "x": np.arange(n * 3, dtype=np.float32).reshape(n, 3)})


def _take(loader, n, key="id"):
    with iter(loader) as it:
        return [np.asarray(next(it)[key]) for _ in range(n)]


def _shard(index, count):
    return grain.sharding.ShardOptions(shard_index=index, shard_count=count, drop_remainder=True)


# -- order and coverage --------------------------------------------------------------------------------
def test_each_epoch_is_a_fresh_permutation_of_every_example():
    batches = _take(data.train_loader(_ids(40), batch_size=8, seed=0), 10)
    first, second = np.concatenate(batches[:5]), np.concatenate(batches[5:])
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(40))
    assert not np.array_equal(first, second) and not np.array_equal(first, np.arange(40))


def test_same_seed_same_stream_other_seed_other_stream():
    a = _take(data.train_loader(_ids(), batch_size=8, seed=5), 6)
    b = _take(data.train_loader(_ids(), batch_size=8, seed=5), 6)
    c = _take(data.train_loader(_ids(), batch_size=8, seed=6), 6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_process_shards_are_disjoint_and_cover_each_epoch_in_global_batches():
    loaders = [data.train_loader(_ids(40), batch_size=8, seed=1, shard=_shard(p, 2)) for p in range(2)]
    assert loaders[0].local_batch_size == 4
    local = [_take(loader, 5) for loader in loaders]
    epoch = np.concatenate([np.concatenate(x) for x in local])
    assert sorted(epoch.tolist()) == list(range(40))
    one_host = _take(data.train_loader(_ids(40), batch_size=8, seed=1), 5)
    for step in range(5):  # global batch k is the same set of examples whatever the process count
        assert sorted(np.concatenate([local[0][step], local[1][step]]).tolist()) == sorted(one_host[step].tolist())


def test_finite_epochs_have_a_length_and_drop_the_remainder():
    loader = data.train_loader(_ids(42), batch_size=8, num_epochs=2, seed=0)
    assert len(loader) == 10
    with iter(loader) as it:
        assert len(list(it)) == 10


# -- eval ------------------------------------------------------------------------------------------------
def test_eval_pass_is_exact_with_padding_and_mask():
    loader = data.eval_loader(_ids(21), batch_size=8)
    with iter(loader) as it:
        batches = list(it)
    assert len(loader) == len(batches) == 3
    ids = np.concatenate([b["id"] for b in batches])
    mask = np.concatenate([b["mask"] for b in batches])
    assert ids[mask].tolist() == list(range(21)) and mask.sum() == 21
    assert np.all(ids[~mask] == 0) and np.all(batches[-1]["x"][~batches[-1]["mask"]] == 0)


def test_eval_pass_over_two_processes_counts_every_example_once():
    ids, masks = [], []
    for p in range(2):
        with iter(data.eval_loader(_ids(21), batch_size=8, shard=_shard(p, 2))) as it:
            batches = list(it)
        assert len(batches) == 3 and all(b["id"].shape == (4,) for b in batches)
        ids += [b["id"] for b in batches]
        masks += [b["mask"] for b in batches]
    ids, masks = np.concatenate(ids), np.concatenate(masks)
    assert sorted(ids[masks].tolist()) == list(range(21))


def test_eval_batch_larger_than_the_split_is_one_padded_batch():
    with iter(data.eval_loader(_ids(5), batch_size=16)) as it:
        (batch,) = list(it)
    assert batch["id"].shape == (16,) and batch["mask"].sum() == 5


# -- global batches on the mesh ------------------------------------------------------------------------
def test_global_batch_is_split_along_the_batch_logical_axis(mesh8):
    loader = data.train_loader(data.mnist("train"), batch_size=32, transforms=MNIST_TRANSFORMS, mesh=mesh8)
    with iter(loader) as it:
        batch = next(it)
    image, label = batch["image"], batch["label"]
    assert isinstance(image, jax.Array) and image.shape == (32, 28, 28, 1) and image.dtype == np.float32
    spec = jax.sharding.PartitionSpec(("data", "fsdp"), None, None, None)
    assert image.sharding == jax.sharding.NamedSharding(mesh8, spec)
    assert label.sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"))
    shards = sorted(image.addressable_shards, key=lambda s: s.device.id)
    assert len(shards) == 8 and {s.data.shape for s in shards} == {(8, 28, 28, 1)}  # 4-way split, x2 replicated
    assert jax.jit(lambda x: x.mean())(image).shape == ()


def test_global_batch_with_custom_rules_and_a_clear_error_for_unknown_axes(mesh8):
    batch = next(iter(data.train_loader(_ids(), batch_size=8, mesh=mesh8, rules={"batch": "data"})))
    assert batch["x"].sharding.spec == jax.sharding.PartitionSpec("data", None)
    with pytest.raises(KeyError, match="does not have"):
        data.train_loader(_ids(), batch_size=8, mesh=mesh8, rules={"batch": "rows"}).host_dataset()
    with pytest.raises(ValueError, match="does not divide"):
        data.train_loader(_ids(), batch_size=6, mesh=mesh8).host_dataset()


def test_device_prefetch_keeps_batches_ready(mesh8):
    loader = data.train_loader(_ids(), batch_size=8, mesh=mesh8, prefetch=3)
    with iter(loader) as it:
        next(it)
        assert isinstance(next(it)["id"], jax.Array)


# -- exact resume -------------------------------------------------------------------------------------
def _resume_matches(loader, save_at=3, after=4, key="image"):
    with iter(loader) as it:
        for _ in range(save_at):
            next(it)
        state = it.get_state()
        expected = [np.asarray(next(it)[key]) for _ in range(after)]
    with iter(loader) as it:
        it.set_state(state)
        got = [np.asarray(next(it)[key]) for _ in range(after)]
        assert it.step == save_at + after
    return all(a.tobytes() == b.tobytes() for a, b in zip(expected, got, strict=True))


def test_resume_is_bit_identical_with_random_transforms_and_mesh(mesh8):
    loader = data.train_loader(data.mnist("train"), batch_size=32, transforms=MNIST_TRANSFORMS, seed=7,
                               mesh=mesh8, num_threads=2)
    assert _resume_matches(loader)


def test_resume_is_bit_identical_across_an_epoch_boundary():
    assert _resume_matches(data.train_loader(_ids(20), batch_size=8, seed=2), save_at=2, after=5, key="id")


def test_resume_is_bit_identical_for_packed_text():
    ds = data.text_corpus(data.stdlib_text_files(limit=40)).map(data.ByteTokenize(eos_id=256))
    loader = data.train_loader(ds, batch_size=4, seed=3, pack=data.Pack(length=128))
    assert _resume_matches(loader, save_at=5, after=3, key="tokens_segment_ids")
    assert _resume_matches(loader, save_at=5, after=3, key="tokens")


@pytest.mark.parametrize("save, restore", [
    (grain.checkpoint.CheckpointSave, grain.checkpoint.CheckpointRestore),
    (data.CheckpointSave, data.CheckpointRestore),
    (grain.checkpoint.CheckpointSave, data.CheckpointRestore),  # same files: ours reads grain's
])
def test_resume_through_orbax_alongside_the_model(tmp_path, mesh8, save, restore):
    loader = data.train_loader(data.mnist("train"), batch_size=16, transforms=MNIST_TRANSFORMS, seed=1, mesh=mesh8)
    params = {"w": jax.numpy.arange(4.0)}
    with iter(loader) as it:
        for _ in range(3):
            next(it)
        manager = ocp.CheckpointManager(tmp_path / "ckpt")
        manager.save(3, args=ocp.args.Composite(params=ocp.args.StandardSave(params), data=save(it)))
        manager.wait_until_finished()
        expected = [np.asarray(next(it)["image"]) for _ in range(3)]
    with iter(loader) as it:
        reader = ocp.CheckpointManager(tmp_path / "ckpt")  # a fresh manager, as after a restart
        restored = reader.restore(3, args=ocp.args.Composite(params=ocp.args.StandardRestore(params),
                                                              data=restore(it)))
        assert restored["data"] is it and it.step == 3
        assert np.array_equal(restored["params"]["w"], params["w"])
        assert all(np.asarray(next(it)["image"]).tobytes() == e.tobytes() for e in expected)


def test_state_records_the_layout():
    import json

    with iter(data.train_loader(_ids(), batch_size=8, seed=4, shard=_shard(1, 2))) as it:
        next(it)
        state = json.loads(it.get_state())
    assert state["process_count"] == 2 and state["process_index"] == 1 and state["worker_count"] == 0
    assert state["step"] == 1 and state["batch_size"] == 8 and state["seed"] == 4


# -- changed layouts: refused clearly, or repositioned ------------------------------------------------
def _state_after(loader, steps):
    with iter(loader) as it:
        for _ in range(steps):
            next(it)
        return it.get_state()


def test_a_changed_process_count_is_refused_with_the_counts():
    state = _state_after(data.train_loader(_ids(), batch_size=8, seed=0, shard=_shard(0, 2)), 3)
    with iter(data.train_loader(_ids(), batch_size=8, seed=0)) as it:
        with pytest.raises(data.DataError, match=r"process_count saved 2, now 1.*on_mismatch='reposition'"):
            it.set_state(state)


def test_a_changed_worker_count_is_refused_before_any_worker_starts():
    state = _state_after(data.train_loader(_ids(), batch_size=8, seed=0), 2)
    with iter(data.train_loader(_ids(), batch_size=8, seed=0, worker_count=2)) as it:
        with pytest.raises(data.DataError, match="worker_count saved 0, now 2"):
            it.set_state(state)


def test_a_different_stream_is_refused_even_in_reposition_mode():
    state = _state_after(data.train_loader(_ids(), batch_size=8, seed=0), 2)
    loader = data.train_loader(_ids(), batch_size=8, seed=1, on_mismatch="reposition")
    with iter(loader) as it, pytest.raises(data.DataError, match="seed: saved 0, now 1"):
        it.set_state(state)
    with iter(loader) as it, pytest.raises(data.DataError, match="not a baobab loader state"):
        it.set_state({"next_index": 3})


def test_reposition_from_two_processes_to_one_gives_the_same_examples_per_step():
    two = [data.train_loader(_ids(40), batch_size=8, seed=9, shard=_shard(p, 2)) for p in range(2)]
    state = _state_after(two[0], 3)
    expected = [sorted(np.concatenate(pair).tolist()) for pair in zip(*[_take(l, 7)[3:] for l in two])]
    one = data.train_loader(_ids(40), batch_size=8, seed=9, on_mismatch="reposition")
    with iter(one) as it:
        it.set_state(state)
        assert it.step == 3
        got = [sorted(np.asarray(next(it)["id"]).tolist()) for _ in range(4)]
    assert got == expected


def test_reposition_with_the_same_process_count_is_bit_identical_with_augmentation():
    loader = data.train_loader(data.mnist("train"), batch_size=16, transforms=MNIST_TRANSFORMS, seed=3)
    reference = _take(loader, 6, key="image")
    with iter(loader) as it:
        it.reposition(4)
        got = [np.asarray(next(it)["image"]) for _ in range(2)]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(reference[4:], got, strict=True))


def test_a_packed_stream_refuses_to_reposition():
    ds = data.text_corpus(data.stdlib_text_files(limit=10)).map(data.ByteTokenize())
    loader = data.train_loader(ds, batch_size=2, pack=data.Pack(length=32), shard=_shard(0, 2))
    state = _state_after(loader, 2)
    other = dataclasses.replace(loader, shard=None, on_mismatch="reposition")
    with iter(other) as it, pytest.raises(data.DataError, match="packed stream cannot be repositioned"):
        it.set_state(state)


def test_restore_with_our_handler_explains_a_changed_process_count(tmp_path):
    from etils import epath

    from baobab.data._checkpoint import CheckpointHandler

    folder = epath.Path(tmp_path)
    saved = data.train_loader(_ids(), batch_size=8, seed=0, shard=_shard(0, 2))
    (folder / "process_0-of-2.json").write_bytes(_state_after(saved, 2))  # as a 2-process save writes it
    with iter(data.train_loader(_ids(), batch_size=8, seed=0)) as it:
        with pytest.raises(data.DataError, match="process_count saved 2, now 1"):
            CheckpointHandler().restore(folder, item=it)
    with iter(data.train_loader(_ids(), batch_size=8, seed=0, on_mismatch="reposition")) as it:
        CheckpointHandler().restore(folder, item=it)
        assert it.step == 2


# -- worker processes -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_worker_processes_cover_the_epoch_and_resume_exactly():
    loader = data.train_loader(data.mnist("train"), batch_size=50, transforms=MNIST_TRANSFORMS[:1],
                               seed=0, worker_count=2, num_epochs=1)
    with iter(loader) as it:
        labels = [np.asarray(b["label"]) for b in it]
    assert len(labels) == 80 and np.bincount(np.concatenate(labels)).tolist() == [400] * 10
    assert _resume_matches(dataclasses.replace(loader, num_epochs=None), save_at=3, after=3)
