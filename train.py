"""Train the generative recommender with Lightning's CLI.

    python train.py                                     # demo: build the demo run, train, evaluate
    python train.py fit --config configs/text_rich.yaml --source ../shared/data/Office --data.run runs/office
    python train.py fit --config configs/text_rich.yaml --data.run runs/office --ckpt_path last   # resume
    python train.py --help
"""

from genrec.pipeline import train_main as main

if __name__ == "__main__":
    main()
