"""Several objects per image: the synthetic data with --max-objects and PASCAL VOC's layout (on a
folder the tests write), class masks, label sets, and one-line errors for bad VOC files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crm_core.data import (DatasetFormatError, DatasetNotFoundError, SyntheticPets, VOCSegmentationData,
                           build_dataset, random_hflip_batch)
from crm_core.data.synthetic import APPEARANCES, render_scene, sample_scene
from crm_core.data.voc import IGNORE, voc_palette
from tests.voc_fixture import write_train_aug, write_voc


@pytest.mark.parametrize("appearance", APPEARANCES)
def test_multi_object_scenes_hold_animals_of_distinct_classes_each_with_its_own_pixels(appearance: str) -> None:
    data = SyntheticPets("train", image_size=64, num_classes=4, length=24, seed=1, appearance=appearance,
                         max_objects=3)
    assert data.multi_label and "max_objects=3" in repr(data)
    counts = []
    for index in range(len(data)):
        sample, scene = data[index], data.scene(index)
        labels = scene.labels
        counts.append(len(labels))
        assert len(set(labels)) == len(labels) and labels[0] == index % 4 == int(sample["label"])
        assert sample["labels"].tolist() == [float(c in labels) for c in range(4)]
        class_mask, parts = sample["class_mask"].numpy(), sample["parts"].numpy()
        assert set(np.unique(class_mask)) <= {0, *(c + 1 for c in labels)}
        for c in labels:  # every animal's head shows: the class is in the picture
            assert ((class_mask == c + 1) & (parts == 2)).any()
        assert np.array_equal(class_mask > 0, sample["mask"].numpy() == 1)  # the binary mask covers every animal
    assert set(counts) == {1, 2, 3}


def test_a_multi_object_image_is_the_single_object_image_with_animals_added() -> None:
    """The first animal, background, clutter and noise are drawn exactly as with one object."""
    single = SyntheticPets("test", image_size=80, num_classes=4, length=16, seed=2, appearance="informative")
    multi = SyntheticPets("test", image_size=80, num_classes=4, length=16, seed=2, appearance="informative",
                          max_objects=3)
    added = 0
    for index in range(16):
        one, many = single[index], multi[index]
        others = (many["class_mask"] > 0) & (many["class_mask"] != one["label"] + 1)
        assert torch.equal(one["image"][:, ~others], many["image"][:, ~others])
        # sensor noise is mirrored over the image, so only the added animals' pixels may differ
        assert torch.equal(one["class_mask"][~others], many["class_mask"][~others])
        added += int(others.any())
    assert added > 0
    assert sample_scene(2, "test", 3, 4, "informative").others == ()


def test_max_objects_is_checked_and_single_object_data_keeps_its_scene() -> None:
    with pytest.raises(ValueError, match="max_objects must be in"):
        SyntheticPets("train", num_classes=4, max_objects=5)
    with pytest.raises(ValueError, match="max_objects must be in"):
        sample_scene(0, "train", 0, 4, max_objects=0)
    with pytest.raises(ValueError, match="synthetic dataset only"):
        build_dataset("pets", "train", image_size=64, max_objects=2)
    scene = sample_scene(0, "train", 5, 4, "random")
    image, parts = render_scene(scene, 64)
    sample = SyntheticPets("train", image_size=64, num_classes=4, length=8)[5]
    assert np.array_equal(sample["parts"].numpy(), parts) and scene.labels == (1,)
    assert sample["class_mask"].unique().tolist() == [0, 2] and sample["labels"].tolist() == [0, 1, 0, 0]


def test_a_flip_mirrors_the_class_mask_with_the_image() -> None:
    data = SyntheticPets("train", image_size=64, num_classes=4, length=4, seed=0, max_objects=3)
    batch = torch.utils.data.default_collate([data[i] for i in range(4)])
    flipped = random_hflip_batch(batch, torch.Generator().manual_seed(0))
    for b in range(4):
        expected = batch["class_mask"][b].flip(-1) if flipped["hflip"][b] else batch["class_mask"][b]
        assert torch.equal(flipped["class_mask"][b], expected)


def test_voc_palette_has_the_published_colours() -> None:
    palette = np.array(voc_palette()).reshape(256, 3)
    assert palette[0].tolist() == [0, 0, 0] and palette[1].tolist() == [128, 0, 0]
    assert palette[15].tolist() == [192, 128, 128] and palette[20].tolist() == [0, 64, 128]  # person, tvmonitor
    assert palette[255].tolist() == [224, 224, 192]  # the boundary


def test_voc_layout_reads_labels_class_masks_and_ignored_boundaries(tmp_path: Path) -> None:
    present = write_voc(tmp_path, train=10, val=4)
    train = build_dataset("voc", "train", image_size=48, data_root=tmp_path)
    val = build_dataset("voc", "val", image_size=48, data_root=tmp_path)
    test = build_dataset("voc", "test", image_size=48, data_root=tmp_path)
    assert isinstance(train, VOCSegmentationData) and train.multi_label and train.num_classes == 20
    assert (len(train), len(val), len(test)) == (9, 1, 4)  # every 10th train image is the lab's val
    for index in range(len(test)):
        sample = test[index]
        classes = present["val"][index]
        assert sorted(int(c) + 1 for c in torch.nonzero(sample["labels"]).flatten()) == list(classes)
        png = tmp_path / "VOCdevkit/VOC2012/SegmentationClass" / f"2007_val_{index:04d}.png"
        expected = np.array(Image.open(png).resize((48, 48), Image.NEAREST), dtype=np.int64)
        assert np.array_equal(sample["class_mask"].numpy(), expected)
        assert (sample["class_mask"] == IGNORE).any()
        mask = sample["mask"].numpy()
        assert np.array_equal(mask == IGNORE, expected == IGNORE)
        assert np.array_equal(mask == 1, (expected > 0) & (expected != IGNORE))
        assert sample["image"].shape == (3, 48, 48) and int(sample["label"]) + 1 in classes


def test_voc_without_its_folder_fails_in_one_line_naming_the_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as error:
        build_dataset("voc", "train", image_size=48, data_root=tmp_path / "nowhere")
    message = str(error.value)
    assert "\n" not in message and "VOCdevkit/VOC2012" in message and "ImageSets/Segmentation" in message
    assert "VOCtrainval_11-May-2012.tar" in message
    write_voc(tmp_path, train=3, val=2)
    (tmp_path / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").unlink()
    build_dataset("voc", "train", image_size=48, data_root=tmp_path)  # its own list is there
    with pytest.raises(DatasetNotFoundError, match="val.txt"):
        build_dataset("voc", "test", image_size=48, data_root=tmp_path)


def test_voc_aug_trains_on_train_aug_and_tests_on_voc_val(tmp_path: Path) -> None:
    present = write_voc(tmp_path, train=10, val=4)
    listed = write_train_aug(tmp_path, extra=10)  # 20 images: VOC's 10 train and 10 of SBD's
    train = build_dataset("voc_aug", "train", image_size=48, data_root=tmp_path)
    val = build_dataset("voc_aug", "val", image_size=48, data_root=tmp_path)
    test = build_dataset("voc_aug", "test", image_size=48, data_root=tmp_path)
    assert train.multi_label and train.num_classes == 20
    assert (len(train), len(val), len(test)) == (18, 2, 4)  # every 10th train_aug image is the lab's val
    kept = [i for i in range(20) if i % 10 != 0]
    aug = tmp_path / "VOCdevkit/VOC2012/SegmentationClassAug"
    for index in (0, len(train) - 1):  # a VOC train image and one of SBD's
        sample, position = train[index], kept[index]
        assert sorted(int(c) + 1 for c in torch.nonzero(sample["labels"]).flatten()) == list(listed[position])
        image_id = (tmp_path / "VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt").read_text().split()[position]
        expected = np.array(Image.open(aug / f"{image_id}.png").resize((48, 48), Image.NEAREST), dtype=np.int64)
        assert np.array_equal(sample["class_mask"].numpy(), expected)
    voc_test = build_dataset("voc", "test", image_size=48, data_root=tmp_path)
    assert all(torch.equal(test[i]["class_mask"], voc_test[i]["class_mask"]) for i in range(len(test)))
    assert [tuple(int(c) + 1 for c in torch.nonzero(test[i]["labels"]).flatten()) for i in range(4)] == present["val"]


def test_voc_aug_refuses_test_images_in_train_aug_and_names_its_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as error:
        build_dataset("voc_aug", "train", image_size=48, data_root=tmp_path)
    message = str(error.value)
    assert "\n" not in message and "SegmentationClassAug" in message and "train_aug.txt" in message
    assert "benchmark.tgz" in message
    write_voc(tmp_path, train=4, val=2)
    write_train_aug(tmp_path, extra=2)
    sets = tmp_path / "VOCdevkit/VOC2012/ImageSets/Segmentation"
    with open(sets / "train_aug.txt", "a") as handle:
        handle.write("2007_val_0001\n")  # an image of the test split
    with pytest.raises(DatasetFormatError, match="1 of its images are in VOC's val list"):
        build_dataset("voc_aug", "train", image_size=48, data_root=tmp_path)
    build_dataset("voc_aug", "test", image_size=48, data_root=tmp_path)  # the test split is VOC's val as ever


def test_bad_voc_masks_are_named_errors(tmp_path: Path) -> None:
    write_voc(tmp_path, train=3, val=2)
    masks = tmp_path / "VOCdevkit/VOC2012/SegmentationClass"
    rgb = Image.open(masks / "2007_val_0000.png").convert("RGB")
    rgb.save(masks / "2007_val_0000.png")
    odd = np.array(Image.open(masks / "2007_val_0001.png"))
    odd[0, 0] = 30
    odd_png = Image.fromarray(odd, mode="P")
    odd_png.putpalette(voc_palette())  # without a palette PIL would renumber the values it saves
    odd_png.save(masks / "2007_val_0001.png")
    test = build_dataset("voc", "test", image_size=48, data_root=tmp_path)
    with pytest.raises(DatasetFormatError, match="mode RGB; VOC's SegmentationClass masks are palette"):
        test[0]
    with pytest.raises(DatasetFormatError, match=r"mask values \[30\] are not classes"):
        test[1]


def test_multi_label_scores_match_scikit_learn() -> None:
    from sklearn.metrics import average_precision_score, f1_score

    from crm_core.metrics import MultiLabelScores, label_hits

    rng = np.random.default_rng(0)
    labels = rng.random((40, 5)) < 0.4
    labels[:, 4] = False  # a class no image holds is left out of the macro averages
    logits = np.round(rng.normal(size=(40, 5)) + 1.5 * labels, 1)  # rounded: ties in the ranking
    scores = MultiLabelScores()
    for part in (slice(0, 13), slice(13, 40)):
        scores.add(torch.from_numpy(logits[part]), torch.from_numpy(labels[part]).float())
    summary = scores.summary()
    present = [0, 1, 2, 3]
    expected_ap = np.mean([average_precision_score(labels[:, c], logits[:, c]) for c in present])
    assert summary["map"] == pytest.approx(expected_ap, abs=1e-12)
    assert summary["f1"] == pytest.approx(f1_score(labels, logits > 0, average="macro", labels=present,
                                                   zero_division=0), abs=1e-12)
    batch = {"labels": torch.tensor([[1.0, 0.0], [1.0, 1.0]]), "label": torch.tensor([0, 1])}
    hits = label_hits(torch.tensor([[2.0, -1.0], [3.0, -0.5]]), batch, multi_label=True)
    assert hits.tolist() == [True, False]  # the second image's second class is missed
    assert label_hits(torch.tensor([[2.0, -1.0], [3.0, -0.5]]), batch).tolist() == [True, False]


def test_the_multi_label_loss_and_the_cams_of_present_classes() -> None:
    from crm_core.losses import classification_loss, present_class_cams

    logits = torch.tensor([[2.0, -1.0, 0.5]])
    batch = {"labels": torch.tensor([[1.0, 0.0, 1.0]]), "label": torch.tensor([0])}
    by_hand = -(torch.nn.functional.logsigmoid(torch.tensor([2.0, 1.0, 0.5]))).mean()  # y log s + (1-y) log(1-s)
    assert classification_loss(logits, batch, multi_label=True) == pytest.approx(float(by_hand))
    assert classification_loss(logits, batch) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, batch["label"])))
    cams = torch.stack([torch.full((2, 2), 0.2), torch.full((2, 2), 0.9), torch.tensor([[0.1, 0.7], [0.3, 0.0]])])[None]
    expected = torch.tensor([[[0.2, 0.7], [0.3, 0.2]]])  # class 1 is absent, its high CAM ignored
    assert torch.equal(present_class_cams(cams, batch, multi_label=True), expected)
    assert torch.equal(present_class_cams(cams, batch), cams[0, 0][None])


def test_train_runs_multi_label_on_several_objects_and_on_a_voc_folder(tmp_path: Path) -> None:
    from crm_core.checkpoints import load_checkpoint
    from crm_core.train import cli

    common = ["--arch", "resnet18", "--model", "resnet", "--steps", "2", "--epochs", "1", "--perceptual", "none",
              "--align-warmup", "0", "--checkpoint-dir", str(tmp_path / "ck"), "--runs-dir", str(tmp_path / "runs"),
              "--val-limit", "8", "--batch-size", "8"]
    assert cli([*common, "--name", "multi", "--max-objects", "3", "--appearance", "informative", "--train-size", "16",
                "--image-size", "64"]) == 0
    checkpoint = load_checkpoint(tmp_path / "ck" / "multi.pt")
    assert checkpoint.train_config["max_objects"] == 3
    import csv
    with open(tmp_path / "runs" / "multi" / "metrics.csv") as handle:
        val = [row for row in csv.DictReader(handle) if row["split"] == "val"]
    assert val and 0 <= float(val[-1]["f1"]) <= 1 and 0 < float(val[-1]["map"]) <= 1
    write_voc(tmp_path / "voc", train=12, val=3)
    assert cli([*common, "--name", "voc", "--dataset", "voc", "--data-root", str(tmp_path / "voc"), "--weights", "none",
                "--image-size", "64"]) == 0
    assert load_checkpoint(tmp_path / "ck" / "voc.pt").class_names[14] == "person"
    write_train_aug(tmp_path / "voc", extra=6)
    assert cli([*common, "--name", "voc_aug", "--dataset", "voc_aug", "--data-root", str(tmp_path / "voc"),
                "--weights", "none", "--image-size", "64"]) == 0
    from crm_core.explain import CamModel
    assert CamModel.load(tmp_path / "ck" / "voc_aug.pt", "cpu").multi_label
    assert cli([*common, "--name", "bad", "--max-objects", "5"]) == 2  # four classes: four animals at most
    assert cli([*common, "--name", "bad", "--dataset", "voc", "--data-root", str(tmp_path / "none"),
                "--weights", "none"]) == 2
