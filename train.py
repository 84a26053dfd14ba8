"""Train the generative recommender with Lightning's CLI.

    python train.py                                     # demo: build the demo run, train, evaluate
    python train.py fit --config configs/office.yaml    # a real dataset
    python train.py fit --config configs/office.yaml --ckpt_path last   # resume after a kill
    python train.py --help
"""

from genrec.pipeline import train_main as main

if __name__ == "__main__":
    main()
