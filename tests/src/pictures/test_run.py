"""predictions.png shows mistakes when there are any: the sample of validation images swaps some
correct ones for misclassified ones kept in the same single pass over the data."""

import numpy as np
import pytest

pytestmark = pytest.mark.unit

run_pictures = pytest.importorskip("src.pictures.run")


class Arr:
    def __init__(self, a):
        self.a = np.asarray(a)

    def asnumpy(self):
        return self.a


class FakeNet:
    """Predicts class 0 for every image whose pixel value is odd (the 'hard' ones), else its
    true class (encoded in the image as value // 2 % 2)."""

    def set_train(self, _):
        pass

    def __call__(self, images):
        v = images.asnumpy()[:, 0, 0, 0].astype(int)
        cls = np.where(v % 2 == 1, 0, (v // 2) % 2)
        return Arr(np.eye(2)[cls])


class FakeData:
    def __init__(self, values, labels, batch=8):
        self.values, self.labels, self.batch = values, labels, batch

    def create_tuple_iterator(self, num_epochs):
        for i in range(0, len(self.values), self.batch):
            v = np.array(self.values[i:i + self.batch], np.float32)
            yield Arr(np.broadcast_to(v[:, None, None, None], (len(v), 3, 2, 2))), \
                Arr(self.labels[i:i + self.batch])


def data_with_mistakes(n=200, wrong_at=(150, 170, 190)):
    labels = [int(i >= n // 2) for i in range(n)]
    values = [2 * y + (4 if i % 3 else 0) for i, y in enumerate(labels)]  # even: right
    for i in wrong_at:
        values[i] = 3  # odd: predicted 0, true 1
    return FakeData(values, labels), labels


def test_mistakes_are_kept_and_shown():
    data, _ = data_with_mistakes()
    sample = np.arange(0, 40, 4)  # 10 positions, all of class 0: all correct
    preds, ys, kept = run_pictures.predict_keeping(FakeNet(), data, set(sample.tolist()),
                                                   wrong=2, seed=1)
    assert (preds != ys).sum() == 3
    wrong_kept = [i for i in kept if preds[i] != ys[i]]
    assert len(wrong_kept) == 2 and set(wrong_kept) <= {150, 170, 190}
    assert set(sample) <= set(kept) and len(kept) == 12  # the reservoir evicted what it dropped
    shown = run_pictures.choose_shown(sample, preds, ys, kept, want_wrong=2)
    assert len(shown) == 10 and list(shown) == sorted(shown)
    assert sum(preds[i] != ys[i] for i in shown) == 2


def test_a_sample_that_already_shows_mistakes_is_left_alone():
    data, _ = data_with_mistakes()
    sample = np.array([150, 170, 190, 0, 4, 8])
    preds, ys, kept = run_pictures.predict_keeping(FakeNet(), data, set(sample.tolist()), 1, 0)
    assert list(run_pictures.choose_shown(sample, preds, ys, kept, 1)) == sorted(sample)


def test_no_mistakes_no_swap():
    data, _ = data_with_mistakes(wrong_at=())
    sample = np.arange(10)
    preds, ys, kept = run_pictures.predict_keeping(FakeNet(), data, set(sample.tolist()), 3, 0)
    assert set(kept) == set(sample)
    assert list(run_pictures.choose_shown(sample, preds, ys, kept, 3)) == list(sample)


class Evaluated:
    """The best epoch's evaluation as training keeps it (src/training/evaluate.Evaluation)."""

    def __init__(self, predictions, labels):
        self.predictions, self.labels = np.asarray(predictions), np.asarray(labels, np.int64)


class ImagesOnly(FakeData):
    """The split's images; the pictures must not predict it again (no network here)."""

    def __init__(self, data):
        super().__init__(data.values, data.labels, data.batch)
        self.passes = 0

    def create_tuple_iterator(self, num_epochs):
        self.passes += 1
        return super().create_tuple_iterator(num_epochs)


@pytest.mark.parametrize("wrong_at", [(150, 170, 190), tuple(range(101, 200, 3)), ()])
def test_pictures_from_the_best_epochs_evaluation_keep_what_a_second_pass_kept(wrong_at):
    """Drawn from predictions training already made, the same mistakes (the reservoir's seeded
    choice) and images are kept as by predicting the split again, in one pass without a net."""
    data, _ = data_with_mistakes(wrong_at=wrong_at)
    sample = np.arange(0, 40, 4)
    preds, ys, kept = run_pictures.predict_keeping(FakeNet(), data, set(sample.tolist()), 2, 7)
    images = ImagesOnly(data)
    preds2, ys2, kept2 = run_pictures.keeping_from(Evaluated(preds, ys), images,
                                                   set(sample.tolist()), 2, 7)
    assert images.passes == 1
    assert (preds2 == preds).all() and (ys2 == ys).all()
    assert sorted(kept2) == sorted(kept)
    assert all((kept2[i] == kept[i]).all() for i in kept)
    assert list(run_pictures.choose_shown(sample, preds2, ys2, kept2, 2)) == \
        list(run_pictures.choose_shown(sample, preds, ys, kept, 2))
